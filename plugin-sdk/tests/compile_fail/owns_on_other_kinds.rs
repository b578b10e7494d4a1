// `owns` (an owned child's change runs the owner's handler) is for event handlers only:
// changing handlers keep progress records per cause, which a child's change has none of.

#[kopf::on::create("kopfexamples", owns = "v1/configmaps")]
fn create_with_owns() {}

#[kopf::timer("kopfexamples", interval = 1.0, owns = "v1/configmaps")]
fn timer_with_owns() {}

fn main() {}
