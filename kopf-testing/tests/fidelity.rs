//! Behaviours where the emulator once differed from a real kube-apiserver (1.37), found by
//! `tests/apiserver/fidelity.py`: each test pins the real server's answer.

use std::time::Duration;

use http_body_util::BodyExt;
use kopf_testing::{Emulator, EmulatorHandle};
use kube::{Client, Config};
use serde_json::{Value, json};

const CRD: &str = include_str!("data/crd.yaml");

async fn start() -> (EmulatorHandle, Client) {
    let emu = Emulator::builder().start().await.unwrap();
    let mut cfg = Config::new(emu.url().parse().unwrap());
    cfg.default_namespace = "default".into();
    cfg.read_timeout = Some(Duration::from_secs(30));
    cfg.default_retry = false;
    (emu, Client::try_from(cfg).unwrap())
}

/// One raw request: the status code and the JSON body (Null when not JSON).
async fn call(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<Value>,
    content_type: &str,
) -> (u16, Value) {
    let mut req = http::Request::builder().method(method).uri(path);
    let bytes = match body {
        Some(b) => {
            req = req.header("content-type", content_type);
            serde_json::to_vec(&b).unwrap()
        }
        None => vec![],
    };
    let resp = client.send(req.body(bytes.into()).unwrap()).await.unwrap();
    let code = resp.status().as_u16();
    let raw = resp.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&raw).unwrap_or(Value::Null))
}

async fn get(client: &Client, path: &str) -> (u16, Value) {
    call(client, "GET", path, None, "").await
}

async fn post(client: &Client, path: &str, body: Value) -> (u16, Value) {
    call(client, "POST", path, Some(body), "application/json").await
}

async fn merge(client: &Client, path: &str, body: Value) -> (u16, Value) {
    call(client, "PATCH", path, Some(body), "application/merge-patch+json").await
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const KEX: &str = "/apis/kopf.dev/v1/namespaces/default/kopfexamples";

#[tokio::test]
async fn delete_with_dry_run_query_keeps_the_object() {
    let (emu, client) = start().await;
    let mut obj = cm("dry");
    obj["metadata"]["finalizers"] = json!(["x.io/f"]);
    post(&client, CMS, obj).await;
    post(&client, CMS, cm("dry-plain")).await;
    let (code, body) = call(&client, "DELETE", &format!("{CMS}/dry?dryRun=All"), None, "").await;
    assert_eq!(code, 200);
    assert!(body.pointer("/metadata/deletionTimestamp").is_none(), "{body}");
    let (code, body) = get(&client, &format!("{CMS}/dry")).await;
    assert_eq!(code, 200);
    assert!(body.pointer("/metadata/deletionTimestamp").is_none(), "{body}");
    let (code, _) = call(
        &client,
        "DELETE",
        &format!("{CMS}/dry-plain?dryRun=All"),
        None,
        "",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(get(&client, &format!("{CMS}/dry-plain")).await.0, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn deleting_a_custom_resource_at_once_answers_a_success_status() {
    let (emu, client) = start().await;
    emu.apply_yaml(CRD).await.unwrap();
    let kex = json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample", "metadata": {"name": "k"}});
    post(&client, KEX, kex.clone()).await;
    let (code, body) = call(&client, "DELETE", &format!("{KEX}/k"), None, "").await;
    assert_eq!(code, 200);
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["status"], "Success");
    assert_eq!(body["details"]["group"], "kopf.dev");
    assert_eq!(body["details"]["kind"], "kopfexamples");
    // With a finalizer the object is returned, marked for deletion.
    let mut kept = kex;
    kept["metadata"]["finalizers"] = json!(["x.io/f"]);
    post(&client, KEX, kept).await;
    let (code, body) = call(&client, "DELETE", &format!("{KEX}/k"), None, "").await;
    assert_eq!(code, 200);
    assert_eq!(body["kind"], "KopfExample");
    assert!(body.pointer("/metadata/deletionTimestamp").is_some());
    emu.shutdown().await;
}

#[tokio::test]
async fn unsupported_field_selectors_are_refused() {
    let (emu, client) = start().await;
    emu.apply_yaml(CRD).await.unwrap();
    for (path, sel, message) in [
        (
            CMS,
            "data.x=1",
            "\"data.x\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
        ),
        (KEX, "spec.field=x", "field label not supported: spec.field"),
        (
            "/api/v1/namespaces/default/pods",
            "spec.containers=x",
            "field label not supported: spec.containers",
        ),
    ] {
        for watch in ["", "&watch=true"] {
            let (code, body) = get(&client, &format!("{path}?fieldSelector={sel}{watch}")).await;
            assert_eq!(code, 400, "{path} {sel} {watch}: {body}");
            assert_eq!(body["reason"], "BadRequest");
            assert_eq!(body["message"], message);
        }
    }
    for (path, sel) in [
        (CMS, "metadata.name=x,metadata.namespace!=y"),
        (KEX, "metadata.name=x"),
        (
            "/api/v1/namespaces/default/pods",
            "status.phase=Running,spec.nodeName=n",
        ),
        ("/api/v1/namespaces/default/secrets", "type=Opaque"),
        (
            "/api/v1/namespaces/default/events",
            "involvedObject.name=x,reason=y",
        ),
        ("/api/v1/namespaces", "status.phase=Active"),
    ] {
        assert_eq!(
            get(&client, &format!("{path}?fieldSelector={sel}")).await.0,
            200,
            "{path} {sel}"
        );
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn crd_selectable_fields_can_be_selected() {
    let (emu, client) = start().await;
    let crd = CRD.replace(
        "      subresources: { status: { } }",
        "      subresources: { status: { } }\n      selectableFields: [{jsonPath: .spec.color}]",
    );
    assert!(crd.contains("selectableFields"));
    emu.apply_yaml(&crd).await.unwrap();
    for (name, color) in [("a", "red"), ("b", "blue")] {
        let kex = json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample", "metadata": {"name": name},
            "spec": {"color": color}});
        post(&client, KEX, kex).await;
    }
    let (code, body) = get(&client, &format!("{KEX}?fieldSelector=spec.color%3Dred")).await;
    assert_eq!(code, 200, "{body}");
    let names: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a"]);
    emu.shutdown().await;
}

const STRICT_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: fidstricts.fid.kopf.dev}
spec:
  scope: Namespaced
  group: fid.kopf.dev
  names: {kind: FidStrict, plural: fidstricts, singular: fidstrict}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                count: {type: integer}
                mode: {type: string, enum: [auto, manual]}
            status:
              type: object
              properties:
                phase: {type: string}
"#;
const FID: &str = "/apis/fid.kopf.dev/v1/namespaces/default/fidstricts";

fn fid(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "fid.kopf.dev/v1", "kind": "FidStrict", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn schema_types_and_enums_are_validated() {
    let (emu, client) = start().await;
    emu.apply_yaml(STRICT_CRD).await.unwrap();
    let (code, body) = post(&client, FID, fid("typed", json!({"count": "three"}))).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(
        body["message"],
        "FidStrict.fid.kopf.dev \"typed\" is invalid: spec.count: Invalid value: \"string\": spec.count in body \
         must be of type integer: \"string\""
    );
    assert_eq!(
        body["details"]["causes"][0],
        json!({"reason": "FieldValueTypeInvalid", "field": "spec.count",
            "message": "Invalid value: \"string\": spec.count in body must be of type integer: \"string\""})
    );
    assert_eq!(post(&client, FID, fid("ok", json!({"count": 3}))).await.0, 201);
    let (code, body) = merge(
        &client,
        &format!("{FID}/ok"),
        json!({"spec": {"mode": "sometimes"}}),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"]["causes"][0]["reason"], "FieldValueNotSupported");
    let (code, body) = merge(
        &client,
        &format!("{FID}/ok/status"),
        json!({"status": {"phase": 1}}),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "status.phase");
    emu.shutdown().await;
}

#[tokio::test]
async fn status_subresource_writes_are_pruned() {
    let (emu, client) = start().await;
    emu.apply_yaml(STRICT_CRD).await.unwrap();
    post(&client, FID, fid("p", json!({"count": 1}))).await;
    let (code, body) = merge(
        &client,
        &format!("{FID}/p/status"),
        json!({"status": {"phase": "Q", "other": 2}}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], json!({"phase": "Q"}));
    let (_, body) = get(&client, &format!("{FID}/p")).await;
    assert_eq!(body["status"], json!({"phase": "Q"}));
    emu.shutdown().await;
}

#[tokio::test]
async fn label_values_and_keys_are_validated() {
    let (emu, client) = start().await;
    let mut obj = cm("lbl");
    obj["metadata"]["labels"] = json!({"a": "b c"});
    let (code, body) = post(&client, CMS, obj).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.labels");
    assert!(
        body["message"].as_str().unwrap().starts_with(
            "ConfigMap \"lbl\" is invalid: metadata.labels: Invalid value: \"b c\": a valid label"
        )
    );
    let mut obj = cm("key");
    obj["metadata"]["annotations"] = json!({"Bad_Prefix/x": "1"});
    assert_eq!(post(&client, CMS, obj).await.0, 422);
    let mut obj = cm("fine");
    obj["metadata"]["labels"] = json!({"example.com/a-b_c.d": "", "x": "Y_1.z"});
    obj["metadata"]["annotations"] = json!({"kopf.zalando.org/last-handled-configuration": "{\"a\": 1}"});
    assert_eq!(post(&client, CMS, obj).await.0, 201);
    let (code, _) = merge(
        &client,
        &format!("{CMS}/fine"),
        json!({"metadata": {"labels": {"x": "-no"}}}),
    )
    .await;
    assert_eq!(code, 422);
    emu.shutdown().await;
}

#[tokio::test]
async fn creating_an_object_with_a_resource_version_is_refused() {
    let (emu, client) = start().await;
    let mut obj = cm("with-rv");
    obj["metadata"]["resourceVersion"] = json!("5");
    let (code, body) = post(&client, CMS, obj).await;
    assert_eq!(code, 500, "{body}");
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 500,
            "message": "resourceVersion should not be set on objects to be created"})
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn list_resource_version_parameters_are_checked() {
    let (emu, client) = start().await;
    for i in 0..3 {
        post(&client, CMS, cm(&format!("c{i}"))).await;
    }
    let (code, body) = get(&client, &format!("{CMS}?resourceVersionMatch=NotOlderThan")).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "resourceVersionMatch");
    let (code, body) = get(&client, &format!("{CMS}?resourceVersion=abc")).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        body["message"],
        "invalid resource version: resourceVersion: Invalid value: \"abc\": strconv.ParseUint: parsing \"abc\": \
         invalid syntax"
    );
    let future = emu.resource_version() + 100_000;
    let (code, body) = get(
        &client,
        &format!("{CMS}?resourceVersion={future}&resourceVersionMatch=NotOlderThan"),
    )
    .await;
    assert_eq!(code, 504, "{body}");
    assert_eq!(body["reason"], "Timeout");
    assert_eq!(body["details"]["causes"][0]["reason"], "ResourceVersionTooLarge");
    assert_eq!(body["details"]["retryAfterSeconds"], 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn list_pagination_details_match_kube() {
    let (emu, client) = start().await;
    for i in 0..5 {
        let mut obj = cm(&format!("p{i}"));
        obj["metadata"]["labels"] = json!({"page": "yes"});
        post(&client, CMS, obj).await;
    }
    // A list "from the cache" (resourceVersion=0) is not paginated.
    let (code, body) = get(&client, &format!("{CMS}?limit=2&resourceVersion=0")).await;
    assert_eq!(code, 200);
    assert_eq!(body["items"].as_array().unwrap().len(), 5);
    assert!(body["metadata"].get("continue").is_none(), "{body}");
    // No remainingItemCount when a selector is used.
    let (_, body) = get(&client, &format!("{CMS}?limit=2&labelSelector=page%3Dyes")).await;
    assert!(body["metadata"]["continue"].is_string());
    assert!(body["metadata"].get("remainingItemCount").is_none(), "{body}");
    let (_, body) = get(&client, &format!("{CMS}?limit=2")).await;
    assert_eq!(body["metadata"]["remainingItemCount"], 3);
    // A negative limit is no limit.
    let (code, body) = get(&client, &format!("{CMS}?limit=-1")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 5);
    emu.shutdown().await;
}

/// The first lines of a watch that the server ends after `timeoutSeconds`.
async fn watch_lines(client: &Client, path: &str) -> (u16, Vec<Value>) {
    let req = http::Request::builder()
        .uri(path)
        .body(Vec::new().into())
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let raw = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&raw).to_string();
    let lines = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (code, lines)
}

#[tokio::test]
async fn send_initial_events_needs_resource_version_match_not_bookmarks() {
    let (emu, client) = start().await;
    post(&client, CMS, cm("w")).await;
    let (code, lines) = watch_lines(
        &client,
        &format!("{CMS}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&timeoutSeconds=1"),
    )
    .await;
    assert_eq!(code, 422, "{lines:?}");
    assert_eq!(lines[0]["details"]["causes"][0]["field"], "resourceVersionMatch");
    let (code, lines) = watch_lines(
        &client,
        &format!(
            "{CMS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"
        ),
    )
    .await;
    assert_eq!(code, 200);
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED"]);
    emu.shutdown().await;
}

#[tokio::test]
async fn apply_patch_without_kind_is_refused() {
    let (emu, client) = start().await;
    let path = format!("{CMS}/ssa?fieldManager=alice");
    let (code, body) = call(
        &client,
        "PATCH",
        &path,
        Some(json!({"data": {"a": "1"}})),
        "application/apply-patch+yaml",
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["message"], "invalid object type: /, Kind=");
    let (code, body) = call(
        &client,
        "PATCH",
        &path,
        Some(json!({"apiVersion": "v1", "data": {"a": "1"}})),
        "application/apply-patch+yaml",
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["message"], "invalid object type: /v1, Kind=");
    let ok =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}});
    assert_eq!(
        call(&client, "PATCH", &path, Some(ok), "application/apply-patch+yaml")
            .await
            .0,
        201
    );
    emu.shutdown().await;
}
