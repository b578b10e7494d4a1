// A CamelCase positional argument is a resource type: one that is not a kube
// `CustomResource` (or without the `typed` feature) is refused with a note saying why, and
// a type is the whole selector.

pub struct Plain {
    pub field: String,
}

#[kopf::on::create(Plain)]
fn create_plain() {}

#[kopf::on::create("kopf.dev", Plain)]
fn type_beside_others() {}

fn main() {}
