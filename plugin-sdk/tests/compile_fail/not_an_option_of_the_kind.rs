// Options a handler kind does not accept are compile errors, each at the option's name.

#[kopf::on::event("kopfexamples", retries = 3)]
fn event_with_retries() {}

#[kopf::on::create("kopfexamples", interval = 1.0)]
fn create_with_interval() {}

#[kopf::on::create("kopfexamples", field = "spec.x", old = kopf::PRESENT)]
fn create_with_old() {}

#[kopf::on::resume("kopfexamples", optional = true)]
fn resume_with_optional() {}

#[kopf::daemon("kopfexamples", interval = 1.0)]
fn daemon_with_interval() {}

#[kopf::timer("kopfexamples", cancellation_timeout = 1.0)]
fn timer_with_cancellation_timeout() {}

#[kopf::on::validate("kopfexamples", retries = 3)]
fn validate_with_retries() {}

#[kopf::on::startup(labels = {"app": "x"})]
fn startup_with_labels() {}

#[kopf::on::startup("kopfexamples")]
fn startup_with_selector() {}

fn main() {}
