//! Typed resources, as kube-rs users expect: a Rust type deriving kube's
//! `CustomResource` selects the handler's resource (`#[kopf::on::create(MyCr)]`), the
//! handler reads the body as that type (`ctx.body_as::<MyCr>()`, `ctx.spec_as::<MySpec>()`),
//! and the plugin carries the type's CRD for `kopf crd PLUGIN`.
//!
//! Needs the `typed` feature (it brings kube's traits); the type needs kube's
//! `CustomResource` derive (kube's `derive` feature and `schemars`).

use serde_json::Value;

/// A resource type handlers can select by: its group, version and plural, and its CRD.
/// Implemented for every type deriving kube's `CustomResource` (with the `typed` feature).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a custom resource type kopf can select by",
    note = "derive `kube::CustomResource` for it and enable the `typed` feature of the `kopf` crate"
)]
pub trait TypedResource {
    /// `[group, version, plural]`.
    fn selector() -> [String; 3];
    /// The CustomResourceDefinition as JSON.
    fn crd() -> Result<Value, serde_json::Error>;
}

// Not recommended in diagnostics: a type that is not a custom resource is then refused
// with `TypedResource`'s own message, the same with and without the feature.
#[cfg(feature = "typed")]
#[diagnostic::do_not_recommend]
impl<T: kube::CustomResourceExt> TypedResource for T {
    fn selector() -> [String; 3] {
        let resource = T::api_resource();
        [resource.group, resource.version, resource.plural]
    }

    fn crd() -> Result<Value, serde_json::Error> {
        serde_json::to_value(T::crd())
    }
}
