// Kopf accepts retries/timeout/backoff on indexers; this operator does not retry them, so
// the SDK refuses the options instead of ignoring them.

#[kopf::index("pods", retries = 3)]
fn index_with_retries() {}

#[kopf::index("pods", timeout = 10.0)]
fn index_with_timeout() {}

#[kopf::index("pods", backoff = 1.0)]
fn index_with_backoff() {}

fn main() {}
