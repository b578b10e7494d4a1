// What a handler kind requires: a field for field handlers, a resource selector for
// resource handlers.

#[kopf::on::field("kopfexamples")]
fn field_without_field() {}

#[kopf::on::create(labels = {"app": "x"})]
fn create_without_selector() {}

fn main() {}
