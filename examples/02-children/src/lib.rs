//! Kopf's `02-children` example in Rust: every new `KopfExample` gets a child Pod, made
//! its own with [`kopf::adopt`] (owner reference, `generateName`, namespace, labels) and
//! created with the operator's credentials ([`kopf::Context::client`]).

use kopf::k8s_openapi::api::core::v1::Pod;
use kopf::kube::{Api, api::PostParams};
use serde_json::{Value, json};

/// Renders a Pod from the spec, adopts it and creates it; the result (stored in
/// `status.create_fn`) lists the child's name.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples")]
pub async fn create_fn(ctx: &kopf::Context) -> kopf::Result<Value> {
    let spec = ctx.spec();
    let duration = spec.get("duration").and_then(Value::as_str).unwrap_or("0");
    let field = spec
        .get("field")
        .and_then(Value::as_str)
        .unwrap_or("default-value");

    // Render the pod with some spec fields used in the template.
    let mut doc = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "spec": {
            "containers": [{
                "name": "the-only-one",
                "image": "busybox",
                "command": ["sh", "-x", "-c"],
                "args": [format!("echo \"FIELD=$FIELD\"\nsleep {duration}\n")],
                "env": [{"name": "FIELD", "value": field}],
            }],
        },
    });

    // Make it our child: assign the namespace, name, labels, owner references, etc.
    kopf::adopt(&mut doc, ctx)?;

    // Actually create an object by requesting the Kubernetes API.
    let pod: Pod = serde_json::from_value(doc)?;
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let pods: Api<Pod> = Api::namespaced(ctx.client()?, &namespace);
    let created = pods.create(&PostParams::default(), &pod).await?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!("Pod child is created: {name}");

    // Update the parent's status.
    Ok(json!({"children": [name]}))
}
