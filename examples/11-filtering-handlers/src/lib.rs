//! Kopf's `11-filtering-handlers` example in Rust: handlers that run only for objects
//! whose labels, annotations or fields match.
//!
//! Every handler returns `true`, stored in `status.<handler id>`, so the object shows
//! which handlers ran. Kopf's `examples/obj.yaml` (label `somelabel: somevalue`,
//! annotation `someannotation: somevalue`, `spec.field: value`) matches every handler
//! whose name does not say otherwise.

use serde_json::Value;

fn is_somevalue(value: Option<&str>, _ctx: &kopf::Context) -> bool {
    value == Some("somevalue")
}

fn is_othervalue(value: Option<&str>, _ctx: &kopf::Context) -> bool {
    value == Some("othervalue")
}

fn field_is_value(value: Option<&Value>, _ctx: &kopf::Context) -> bool {
    value.and_then(Value::as_str) == Some("value")
}

fn has_items(ctx: &kopf::Context) -> bool {
    ctx.spec()
        .get("items")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

fn never(_ctx: &kopf::Context) -> bool {
    false
}

// --- Labels ---------------------------------------------------------------------------------

/// The label has this exact value.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", labels = {"somelabel": "somevalue"})]
pub fn create_with_labels_matching() -> bool {
    tracing::info!("Label is matching.");
    true
}

/// The label exists, with any value.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", labels = {"somelabel": kopf::PRESENT})]
pub fn create_with_labels_present() -> bool {
    tracing::info!("Label is present.");
    true
}

/// The label does not exist.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", labels = {"nonexistent": kopf::ABSENT})]
pub fn create_with_labels_absent() -> bool {
    tracing::info!("Label is absent.");
    true
}

/// A callback decides on the label's value.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", labels = {"somelabel": is_somevalue})]
pub fn create_with_labels_callback_matching() -> bool {
    tracing::info!("Label callback matching.");
    true
}

/// The label has another value: not for `obj.yaml`.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", labels = {"somelabel": "othervalue"})]
pub fn create_with_labels_mismatching() -> bool {
    tracing::info!("Label is mismatching.");
    true
}

/// A callback rejects the label's value: not for `obj.yaml`.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", labels = {"somelabel": is_othervalue})]
pub fn create_with_labels_callback_mismatching() -> bool {
    tracing::info!("Label callback mismatching.");
    true
}

// --- Annotations ----------------------------------------------------------------------------

/// The annotation has this exact value.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", annotations = {"someannotation": "somevalue"})]
pub fn create_with_annotations_matching() -> bool {
    tracing::info!("Annotation is matching.");
    true
}

/// The annotation exists, with any value.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", annotations = {"someannotation": kopf::PRESENT})]
pub fn create_with_annotations_present() -> bool {
    tracing::info!("Annotation is present.");
    true
}

/// The annotation does not exist.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", annotations = {"nonexistent": kopf::ABSENT})]
pub fn create_with_annotations_absent() -> bool {
    tracing::info!("Annotation is absent.");
    true
}

/// A callback decides on the annotation's value.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", annotations = {"someannotation": is_somevalue})]
pub fn create_with_annotations_callback_matching() -> bool {
    tracing::info!("Annotation callback matching.");
    true
}

/// The annotation has another value: not for `obj.yaml`.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", annotations = {"someannotation": "othervalue"})]
pub fn create_with_annotations_mismatching() -> bool {
    tracing::info!("Annotation is mismatching.");
    true
}

/// A callback rejects the annotation's value: not for `obj.yaml`.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", annotations = {"someannotation": is_othervalue})]
pub fn create_with_annotations_callback_mismatching() -> bool {
    tracing::info!("Annotation callback mismatching.");
    true
}

// --- Fields and when= -----------------------------------------------------------------------

/// `spec.field` has this exact value.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", field = "spec.field", value = "value")]
pub fn create_with_field_value() -> bool {
    tracing::info!("Field value is satisfied.");
    true
}

/// `spec.field` exists.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", field = "spec.field", value = kopf::PRESENT)]
pub fn create_with_field_presence() -> bool {
    tracing::info!("Field presence is satisfied.");
    true
}

/// `spec.nonexistent` does not exist.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", field = "spec.nonexistent", value = kopf::ABSENT)]
pub fn create_with_field_absence() -> bool {
    tracing::info!("Field absence is satisfied.");
    true
}

/// A callback decides on `spec.field`'s value.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", field = "spec.field", value = field_is_value)]
pub fn create_with_field_callback() -> bool {
    tracing::info!("Field value callback is satisfied.");
    true
}

/// `spec.field` has another value: not for `obj.yaml`.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", field = "spec.field", value = "othervalue")]
pub fn create_with_field_mismatching() -> bool {
    tracing::info!("Field value is mismatching.");
    true
}

/// A `when=` callback on the whole object: `spec.items` is not empty.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", when = has_items)]
pub fn create_with_when_matching() -> bool {
    tracing::info!("When-filter is satisfied.");
    true
}

/// A `when=` callback that never matches.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", when = never)]
pub fn create_with_when_mismatching() -> bool {
    tracing::info!("When-filter is not satisfied.");
    true
}

/// Filters combine: all must match.
#[kopf::on::create(
    "kopf.dev", "v1", "kopfexamples",
    labels = {"somelabel": kopf::PRESENT},
    annotations = {"someannotation": kopf::ABSENT},
)]
pub fn create_with_combined_filters() -> bool {
    tracing::info!("Combined filters are satisfied.");
    true
}

// --- Changes: old=/new= and when= with the cause ----------------------------------------------

fn is_big(value: Option<&Value>, _ctx: &kopf::Context) -> bool {
    value.and_then(Value::as_i64).is_some_and(|size| size > 10)
}

fn was_small(value: Option<&Value>, _ctx: &kopf::Context) -> bool {
    value.and_then(Value::as_i64).is_none_or(|size| size <= 10)
}

/// A `when=` callback of a changing handler gets what the handler gets: the cause's
/// reason, old, new and diff (Kopf passes every kwarg).
fn is_a_spec_update(ctx: &kopf::Context) -> bool {
    ctx.reason() == Some("update")
        && ctx.old().is_some_and(|old| old.get("spec").is_some())
        && ctx.new().is_some()
        && !ctx.diff().is_empty()
}

/// `spec.size` grows past 10: `old=`/`new=` callbacks get the field's old and new values.
#[kopf::on::update("kopf.dev", "v1", "kopfexamples", field = "spec.size", old = was_small, new = is_big)]
pub fn update_when_growing_big(ctx: &kopf::Context) -> bool {
    tracing::info!("The size grew big: {:?} -> {:?}.", ctx.old(), ctx.new());
    true
}

/// An update whose `when=` looks at the cause.
#[kopf::on::update("kopf.dev", "v1", "kopfexamples", when = is_a_spec_update)]
pub fn update_with_cause_in_when() -> bool {
    tracing::info!("The when-filter saw the cause.");
    true
}
