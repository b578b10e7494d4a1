//! Unit-testing handlers without a cluster: build a [`Context`] and call the handler
//! function directly.
//!
//! ```
//! use kopf::testing::ContextBuilder;
//! use serde_json::{Value, json};
//!
//! #[kopf::on::create("kopf.dev", "v1", "kopfexamples")]
//! fn create_fn(ctx: &kopf::Context) -> kopf::Result<Value> {
//!     let field = ctx.spec()["field"].as_str().unwrap_or_default().to_owned();
//!     ctx.patch().status()["seen"] = json!(true);
//!     ctx.info("Created", format!("field={field}"));
//!     Ok(json!({"message": format!("hello {field}")}))
//! }
//!
//! let ctx = ContextBuilder::new("kopf.dev/v1", "KopfExample")
//!     .name("kex-1")
//!     .namespace("default")
//!     .spec(json!({"field": "world"}))
//!     .reason("create")
//!     .build();
//! let result = create_fn(&ctx).unwrap();
//! assert_eq!(result["message"], "hello world");
//! assert_eq!(ctx.patch().as_value()["status"]["seen"], json!(true));
//! let events = kopf::testing::posted_events(&ctx);
//! assert_eq!(events[0]["reason"], "Created");
//! # fn main() {}
//! ```
//!
//! Without a `kopf` host, what a handler asks of the host answers "not initialised":
//! events are recorded (see [`posted_events`]) instead of posted, log lines go to the
//! test's own `tracing` subscriber if it installs one, and host-backed features (indices,
//! memos shared with the operator, the operator's kube client) are unavailable. Test those
//! end-to-end with the `kopf-testing` crate's `KopfRunner`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kopf_abi::protocol::{Invocation, Purpose, ResourceInfo};
use serde_json::{Map, Value, json};

use crate::context::{Context, DiffItem, DiffOperation};

/// Builds a [`Context`] for calling a handler function in a unit test.
///
/// Starts from an object of the given `apiVersion` and `kind` with an empty spec; every
/// setter returns the builder. Nothing here talks to a cluster.
#[derive(Debug, Clone)]
#[must_use]
pub struct ContextBuilder {
    handler_id: String,
    body: Map<String, Value>,
    invocation: Invocation,
}

impl ContextBuilder {
    /// An object of `api_version` (`group/version`, or `v1` for the core group) and `kind`.
    pub fn new(api_version: &str, kind: &str) -> Self {
        let mut body = Map::new();
        body.insert("apiVersion".into(), Value::from(api_version));
        body.insert("kind".into(), Value::from(kind));
        body.insert("metadata".into(), json!({}));
        body.insert("spec".into(), json!({}));
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        Self {
            handler_id: "handler".to_owned(),
            body,
            invocation: Invocation {
                purpose: Purpose::Handle,
                resource: Some(ResourceInfo {
                    group: group.to_owned(),
                    version: version.to_owned(),
                    plural: format!("{}s", kind.to_lowercase()),
                    kind: kind.to_owned(),
                    namespaced: true,
                }),
                ..Default::default()
            },
        }
    }

    /// A context from a whole object body (`apiVersion`, `kind`, `metadata`, `spec`, ...).
    /// Fields missing from `body` stay absent.
    pub fn from_body(body: Value) -> Self {
        let api_version = body["apiVersion"].as_str().unwrap_or("v1").to_owned();
        let kind = body["kind"].as_str().unwrap_or_default().to_owned();
        let mut builder = Self::new(&api_version, &kind);
        builder.body = match body {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        builder
    }

    /// The handler id the context reports (`ctx.handler_id()`); `handler` by default.
    pub fn handler_id(mut self, id: impl Into<String>) -> Self {
        self.handler_id = id.into();
        self
    }

    /// `metadata.name`.
    pub fn name(self, name: &str) -> Self {
        self.meta("name", Value::from(name))
    }

    /// `metadata.namespace` (a cluster-scoped resource has none: do not set it).
    pub fn namespace(self, namespace: &str) -> Self {
        self.meta("namespace", Value::from(namespace))
    }

    /// `metadata.uid`.
    pub fn uid(self, uid: &str) -> Self {
        self.meta("uid", Value::from(uid))
    }

    /// One label in `metadata.labels`.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.meta_map("labels").insert(key.to_owned(), Value::from(value));
        self
    }

    /// One annotation in `metadata.annotations`.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.meta_map("annotations")
            .insert(key.to_owned(), Value::from(value));
        self
    }

    /// The object's `spec`.
    pub fn spec(mut self, spec: Value) -> Self {
        self.body.insert("spec".into(), spec);
        self
    }

    /// The object's `status`.
    pub fn status(mut self, status: Value) -> Self {
        self.body.insert("status".into(), status);
        self
    }

    /// Any top-level field of the body (`data` of a ConfigMap, ...).
    pub fn field(mut self, key: &str, value: Value) -> Self {
        self.body.insert(key.to_owned(), value);
        self
    }

    /// The served resource's plural name (default: the kind, lower-cased, plus `s`).
    pub fn plural(mut self, plural: &str) -> Self {
        if let Some(r) = self.invocation.resource.as_mut() {
            r.plural = plural.to_owned();
        }
        self
    }

    /// Marks the resource cluster-scoped.
    pub fn cluster_scoped(mut self) -> Self {
        if let Some(r) = self.invocation.resource.as_mut() {
            r.namespaced = false;
        }
        self
    }

    /// The cause of a changing handler: `create`, `update`, `delete` or `resume`.
    pub fn reason(mut self, reason: &str) -> Self {
        self.invocation.reason = Some(reason.to_owned());
        self
    }

    /// The watch event type of an event handler (`ADDED`, `MODIFIED`, `DELETED`).
    pub fn event_type(mut self, event_type: &str) -> Self {
        self.invocation.event_type = Some(event_type.to_owned());
        self
    }

    /// The diff (`ctx.diff()`), e.g. of an update handler.
    pub fn diff(mut self, items: impl IntoIterator<Item = DiffItem>) -> Self {
        let tuples: Vec<Value> = items
            .into_iter()
            .map(|d| {
                let op = match d.operation {
                    DiffOperation::Add => "add",
                    DiffOperation::Change => "change",
                    DiffOperation::Remove => "remove",
                };
                json!([op, d.field, d.old, d.new])
            })
            .collect();
        self.invocation.diff = Some(Value::Array(tuples));
        self
    }

    /// The old value (`ctx.old()`): the old essence, or the old field value of a field handler.
    pub fn old(mut self, old: Value) -> Self {
        self.invocation.old = Some(old);
        self
    }

    /// The new value (`ctx.new()`).
    pub fn new_value(mut self, new: Value) -> Self {
        self.invocation.new = Some(new);
        self
    }

    /// The 0-based attempt number (`ctx.retry()`) and the time since the first attempt.
    pub fn retry(mut self, retry: u32, runtime: Duration) -> Self {
        self.invocation.retry = retry;
        self.invocation.runtime = runtime.as_secs_f64();
        self
    }

    /// The handler's `param` option.
    pub fn param(mut self, param: Value) -> Self {
        self.invocation.param = Some(param);
        self
    }

    /// The operator settings a startup handler sees (`ctx.settings()`).
    pub fn settings(mut self, settings: Value) -> Self {
        self.invocation.settings = Some(settings);
        self
    }

    /// An activity instead of an object (`startup`, `cleanup`, `authentication`, `probe`):
    /// the context has no body.
    pub fn activity(mut self, activity: &str) -> Self {
        self.invocation.activity = Some(activity.to_owned());
        self.invocation.resource = None;
        self.body.clear();
        self
    }

    /// The context: call the handler with `&ctx`, then inspect its result, `ctx.patch()`
    /// and [`posted_events`].
    pub fn build(self) -> Context {
        let mut invocation = self.invocation;
        if !self.body.is_empty() {
            invocation.body = Some(Value::Object(self.body));
        }
        Context::from_invocation(self.handler_id, invocation).with_event_recorder(EventRecorder::default())
    }

    fn meta(mut self, key: &str, value: Value) -> Self {
        self.meta_obj().insert(key.to_owned(), value);
        self
    }

    fn meta_obj(&mut self) -> &mut Map<String, Value> {
        let meta = self.body.entry("metadata").or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        match meta {
            Value::Object(m) => m,
            _ => unreachable!("metadata was just made an object"),
        }
    }

    fn meta_map(&mut self, key: &str) -> &mut Map<String, Value> {
        let map = self.meta_obj().entry(key).or_insert_with(|| json!({}));
        if !map.is_object() {
            *map = json!({});
        }
        match map {
            Value::Object(m) => m,
            _ => unreachable!("the map was just made an object"),
        }
    }
}

/// Where a context built by [`ContextBuilder`] keeps the events its handler posts.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventRecorder(Arc<Mutex<Vec<Value>>>);

impl EventRecorder {
    pub(crate) fn record(&self, event: Value) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }

    fn events(&self) -> Vec<Value> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The Kubernetes events a handler posted through a context from [`ContextBuilder`]
/// (`ctx.info`, `ctx.warn`, `ctx.exception`, `ctx.event`), oldest first: objects with
/// `type`, `reason`, `message`, `object` and (for the level-gated ones) `level`.
/// Empty for contexts that did not come from the builder.
pub fn posted_events(ctx: &Context) -> Vec<Value> {
    ctx.event_recorder()
        .map(EventRecorder::events)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_object_and_the_cause() {
        let ctx = ContextBuilder::new("kopf.dev/v1", "KopfExample")
            .name("kex")
            .namespace("ns")
            .label("app", "x")
            .annotation("a", "b")
            .spec(json!({"field": 1}))
            .status(json!({"s": 2}))
            .reason("update")
            .diff([DiffItem {
                operation: DiffOperation::Change,
                field: vec!["spec".into(), "field".into()],
                old: Some(json!(0)),
                new: Some(json!(1)),
            }])
            .old(json!(0))
            .new_value(json!(1))
            .retry(2, Duration::from_secs(3))
            .param(json!("p"))
            .handler_id("h")
            .build();
        assert_eq!(ctx.handler_id(), "h");
        assert_eq!(ctx.name(), Some("kex"));
        assert_eq!(ctx.namespace(), Some("ns"));
        assert_eq!(ctx.object_ref(), "ns/kex");
        assert_eq!(ctx.labels()["app"], "x");
        assert_eq!(ctx.annotations()["a"], "b");
        assert_eq!(ctx.spec()["field"], 1);
        assert_eq!(ctx.status()["s"], 2);
        assert_eq!(ctx.reason(), Some("update"));
        assert_eq!(ctx.diff()[0].field, ["spec", "field"]);
        assert_eq!(ctx.diff()[0].new, Some(json!(1)));
        assert_eq!(ctx.old(), Some(&json!(0)));
        assert_eq!(ctx.new(), Some(&json!(1)));
        assert_eq!(ctx.retry(), 2);
        assert_eq!(ctx.runtime(), Duration::from_secs(3));
        assert_eq!(ctx.param(), Some(&json!("p")));
        let resource = ctx.resource().cloned().unwrap_or_default();
        assert_eq!(
            (
                resource.group.as_str(),
                resource.version.as_str(),
                resource.plural.as_str()
            ),
            ("kopf.dev", "v1", "kopfexamples")
        );
        assert_eq!(ctx.object_reference()["kind"], "KopfExample");
    }

    #[test]
    fn records_events_and_patches() {
        let ctx = ContextBuilder::new("v1", "ConfigMap").name("cm").build();
        ctx.info("Seen", "hello");
        ctx.warn("Odd", 42);
        ctx.patch().meta()["labels"] = json!({"x": "y"});
        let events = posted_events(&ctx);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["type"], "Normal");
        assert_eq!(events[1]["message"], "42");
        assert_eq!(ctx.patch().as_value()["metadata"]["labels"]["x"], "y");
        // A clone shares the record, as it shares the patch.
        ctx.clone().exception("Boom", "e");
        assert_eq!(posted_events(&ctx).len(), 3);
    }

    #[test]
    fn from_body_and_activities() {
        let body = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
        let ctx = ContextBuilder::from_body(body.clone()).cluster_scoped().build();
        assert_eq!(ctx.body(), &body);
        let startup = ContextBuilder::new("v1", "Pod")
            .activity("startup")
            .settings(json!({"posting": {"level": "INFO"}}))
            .build();
        assert_eq!(startup.activity(), Some("startup"));
        assert!(startup.resource().is_none());
        assert_eq!(
            startup.settings().map(|s| &s["posting"]["level"]),
            Some(&json!("INFO"))
        );
    }
}
