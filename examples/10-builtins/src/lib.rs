//! Kopf's `10-builtins` example in Rust: handlers for core Pods.
//!
//! Every pod in sight (created, or found when the operator starts) gets a "killer": a task
//! on the plugin's runtime that deletes the pod after a while (30 s, as in Kopf; the
//! annotation `kopf.dev/ttl` on a pod overrides it, in seconds). When the pod is deleted
//! first, its delete handler cancels the killer. Pods of `kube-*` namespaces are left alone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kopf::k8s_openapi::api::core::v1::Pod;
use kopf::kube::{Api, api::DeleteParams};
use kopf::tokio::task::AbortHandle;

/// The annotation that overrides the killing timeout.
pub const TTL_ANNOTATION: &str = "kopf.dev/ttl";

/// Kopf's default timeout of the killer.
const DEFAULT_TTL: f64 = 30.0;

/// Scheduled killers by `namespace/name`.
static TASKS: Mutex<Option<HashMap<String, AbortHandle>>> = Mutex::new(None);

fn tasks<R>(f: impl FnOnce(&mut HashMap<String, AbortHandle>) -> R) -> R {
    let mut guard = TASKS.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

/// A new pod: schedule its killer.
#[kopf::on::create("", "v1", "pods")]
pub async fn pod_in_sight(ctx: &kopf::Context) -> kopf::Result<()> {
    schedule_killer(ctx)
}

/// A pod found when the operator starts: schedule its killer too. (Kopf stacks
/// `@on.resume` and `@on.create` on one function; handler ids must be unique here.)
#[kopf::on::resume("", "v1", "pods")]
pub async fn pod_in_sight_resumed(ctx: &kopf::Context) -> kopf::Result<()> {
    schedule_killer(ctx)
}

/// The pod is being deleted: cancel its killer.
#[kopf::on::delete("", "v1", "pods")]
pub async fn pod_deleted(ctx: &kopf::Context) {
    if let Some(task) = tasks(|t| t.remove(&ctx.object_ref())) {
        task.abort();
        ctx.logger().info("=== Pod killing is cancelled!");
    }
}

fn schedule_killer(ctx: &kopf::Context) -> kopf::Result<()> {
    let namespace = ctx.namespace().unwrap_or_default().to_owned();
    let name = ctx.name().unwrap_or_default().to_owned();
    if namespace.starts_with("kube-") {
        return Ok(());
    }
    let ttl = ctx
        .annotations()
        .get(TTL_ANNOTATION)
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|t| t.is_finite() && *t >= 0.0)
        .unwrap_or(DEFAULT_TTL);
    let client = ctx.client()?;
    let logger = ctx.logger();
    let key = ctx.object_ref();
    logger.info(format_args!("=== Pod killing happens in {ttl}s."));
    let task = kopf::tokio::spawn(async move {
        kopf::tokio::time::sleep(Duration::from_secs_f64(ttl)).await;
        logger.info("=== Pod killing happens NOW!");
        let pods: Api<Pod> = Api::namespaced(client, &namespace);
        if let Err(e) = pods.delete(&name, &DeleteParams::default()).await {
            logger.warn(format_args!("=== Pod killing failed: {e}"));
        }
        tasks(|t| t.remove(&format!("{namespace}/{name}")));
    });
    if let Some(previous) = tasks(|t| t.insert(key, task.abort_handle())) {
        previous.abort();
    }
    Ok(())
}
