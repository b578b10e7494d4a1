//! Kopf's `16-indexing` example in Rust: an in-memory index of pods, read by other handlers.
//!
//! `pods_by_namespace` indexes every pod's name under its namespace; the timer of each
//! KopfExample reads the index for its own namespace and stores the sorted pod names in
//! `status.list_pods`. Indices are complete before any other handler runs.

use serde_json::{Value, json};

/// Indexes pods: `{namespace: name}`.
#[kopf::index("pods")]
pub fn pods_by_namespace(ctx: &kopf::Context) -> Value {
    json!({ ctx.namespace().unwrap_or_default(): ctx.name() })
}

/// Lists the pods of the object's namespace from the index, every second.
#[kopf::timer("kopfexamples", interval = 1.0)]
pub fn list_pods(ctx: &kopf::Context) -> Result<Value, kopf::Error> {
    let namespace = ctx.namespace().unwrap_or_default();
    let found = ctx
        .index("pods_by_namespace")
        .get(namespace)
        .map_err(kopf::Error::msg)?;
    let mut names: Vec<String> = found
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    names.sort();
    tracing::info!("Pods in {namespace}: {names:?}");
    Ok(json!({"pods": names}))
}
