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

#[allow(dead_code)]
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
