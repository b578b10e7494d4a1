//! Ephemeral volume claims: each `EphemeralVolumeClaim` gets a `PersistentVolumeClaim` of
//! its size, owned by it (deleted with it), resized when the size changes.

use kopf::k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kopf::kube::Api;
use kopf::kube::api::{Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};

/// The spec of an `EphemeralVolumeClaim`.
#[derive(Debug, Deserialize)]
pub struct Spec {
    /// The storage to request, e.g. `1Gi`.
    pub size: Option<String>,
}

/// Creates the PVC and remembers its name in `status.create_fn.pvc-name`.
#[kopf::on::create("kopf.dev", "v1", "ephemeralvolumeclaims")]
pub async fn create_fn(ctx: &kopf::Context) -> kopf::Result<Value> {
    let spec: Spec = ctx.spec_as()?;
    let Some(size) = spec.size else {
        return Err(kopf::PermanentError::new("Size must be set. Got None.").into());
    };

    let mut pvc = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
        },
    });
    // Our child: the namespace, a name derived from ours, labels, the owner reference.
    kopf::adopt(&mut pvc, ctx)?;

    let pvc: PersistentVolumeClaim = serde_json::from_value(pvc)?;
    let pvcs: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client()?, ctx.namespace().unwrap_or("default"));
    let created = pvcs.create(&PostParams::default(), &pvc).await?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!("PVC child is created: {name}");
    Ok(json!({"pvc-name": name}))
}

/// Resizes the PVC when `spec.size` changes.
#[kopf::on::field("kopf.dev", "v1", "ephemeralvolumeclaims", field = "spec.size")]
pub async fn update_size(ctx: &kopf::Context) -> kopf::Result<()> {
    let Some(size) = ctx.new().and_then(Value::as_str) else {
        return Err(kopf::PermanentError::new("Size must be set. Got None.").into());
    };
    let Some(name) = ctx.status()["create_fn"]["pvc-name"].as_str() else {
        return Err(kopf::TemporaryError::new("the PVC is not created yet")
            .delay(10.0)
            .into());
    };
    let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
    let pvcs: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client()?, ctx.namespace().unwrap_or("default"));
    pvcs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!("PVC child is updated: {name} to {size}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use kopf::testing::ContextBuilder;
    use serde_json::json;

    #[test]
    fn a_claim_without_a_size_fails_for_good() {
        let ctx = ContextBuilder::new("kopf.dev/v1", "EphemeralVolumeClaim")
            .namespace("default")
            .name("my-claim")
            .spec(json!({}))
            .reason("create")
            .build();
        let outcome = kopf::block_on(super::create_fn(&ctx)).expect("the plugin runtime starts");
        let error = outcome.unwrap_err();
        assert!(error.to_string().contains("Size must be set"), "{error}");
    }
}
