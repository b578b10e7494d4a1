//! Posting core/v1 Events about objects, byte-compatible with Kopf's poster.

use kube::Client;
use serde_json::{Value, json};

use super::{ApiError, patching, urls::ResourcePath};
use crate::structs::bodies::Body;

/// Kopf truncates event messages to this many characters, with `...` in the middle.
pub const MAX_MESSAGE_LENGTH: usize = 1024;

/// The object an event is about (Kopf's `involvedObject`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvolvedObject {
    /// `apiVersion` of the object.
    pub api_version: String,
    /// `kind` of the object.
    pub kind: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Namespace; empty for cluster-scoped objects.
    pub namespace: String,
}

impl InvolvedObject {
    /// Takes the reference from an object's body, or from an object reference
    /// (`name`, `uid`, `namespace` at the top level, as the SDK's `event.post` sends).
    pub fn from_body(body: &Value) -> Self {
        let text = |pointer: &str| {
            let flat = pointer.trim_start_matches("/metadata");
            body.pointer(pointer)
                .or_else(|| body.pointer(flat))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Self {
            api_version: text("/apiVersion"),
            kind: text("/kind"),
            name: text("/metadata/name"),
            uid: text("/metadata/uid"),
            namespace: text("/metadata/namespace"),
        }
    }
}

/// Who reports the events (Kopf's `settings.posting`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reporter {
    /// `reportingComponent` and `source.component`.
    pub component: String,
    /// `reportingInstance`.
    pub instance: String,
    /// `metadata.generateName`.
    pub name_prefix: String,
}

impl Default for Reporter {
    fn default() -> Self {
        Self {
            component: "kopf".into(),
            instance: "dev".into(),
            name_prefix: "kopf-event-".into(),
        }
    }
}

/// Shortens a message to [`MAX_MESSAGE_LENGTH`] characters, keeping both ends.
pub fn truncate_message(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    if chars.len() <= MAX_MESSAGE_LENGTH {
        return message.to_owned();
    }
    let keep = MAX_MESSAGE_LENGTH - 3;
    let head = keep / 2;
    let tail = keep - head;
    let mut out: String = chars[..head].iter().collect();
    out.push_str("...");
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// Builds the Event body as Kopf posts it.
pub fn build_event(
    object: &InvolvedObject,
    reporter: &Reporter,
    event_type: &str,
    reason: &str,
    message: &str,
) -> Value {
    let now = jiff::Timestamp::now();
    let seconds = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let micros = now.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string();
    let namespace = if object.namespace.is_empty() {
        "default"
    } else {
        &object.namespace
    };
    let mut involved = json!({
        "apiVersion": object.api_version,
        "kind": object.kind,
        "name": object.name,
        "uid": object.uid,
    });
    if !object.namespace.is_empty() {
        involved["namespace"] = json!(object.namespace);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": namespace, "generateName": reporter.name_prefix},
        "action": "Action?",
        "type": event_type,
        "reason": reason,
        "message": truncate_message(message),
        "reportingComponent": reporter.component,
        "reportingInstance": reporter.instance,
        "source": {"component": reporter.component},
        "firstTimestamp": seconds,
        "lastTimestamp": seconds,
        "eventTime": micros,
        "involvedObject": involved,
    })
}

/// Posts an Event built by [`build_event`].
pub async fn post_event(client: &Client, event: &Value) -> Result<Value, ApiError> {
    let namespace = Body::new(event).namespace().unwrap_or("default");
    let events = ResourcePath {
        group: String::new(),
        version: "v1".into(),
        plural: "events".into(),
        namespaced: true,
    };
    patching::create(client, &events.collection(Some(namespace)), event).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_keep_both_ends() {
        let message = format!("{}{}", "a".repeat(1000), "b".repeat(1000));
        let short = truncate_message(&message);
        assert_eq!(short.chars().count(), MAX_MESSAGE_LENGTH);
        assert!(short.starts_with("aaa") && short.ends_with("bbb") && short.contains("..."));
        assert_eq!(truncate_message("short"), "short");
    }

    #[test]
    fn events_reference_the_object() {
        let body = json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {"name": "x", "namespace": "ns", "uid": "u1"}});
        let event = build_event(
            &InvolvedObject::from_body(&body),
            &Reporter::default(),
            "Normal",
            "Done",
            "ok",
        );
        assert_eq!(event["involvedObject"]["uid"], "u1");
        assert_eq!(event["metadata"]["namespace"], "ns");
        assert_eq!(event["metadata"]["generateName"], "kopf-event-");
        assert_eq!(event["source"]["component"], "kopf");
        // An object reference (what plugins send) works the same.
        let reference = json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "name": "x", "namespace": "ns", "uid": "u1"});
        assert_eq!(
            InvolvedObject::from_body(&reference),
            InvolvedObject::from_body(&body)
        );
    }
}
