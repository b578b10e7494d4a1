//! The emulator calls stored webhook configurations as kube-apiserver does: failures of
//! unreachable webhooks deny the request with `failurePolicy: Fail` and are ignored with
//! `Ignore`; webhook configurations themselves are never subject to webhooks.

use kopf_testing::Emulator;
use serde_json::json;

fn config(name: &str, policy: &str, port: u16) -> serde_json::Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": format!("{name}.example.test"),
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"],
                       "operations": ["CREATE"], "scope": "*"}],
            "objectSelector": {"matchLabels": {"policy": policy}},
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/x"), "caBundle": ""},
            "failurePolicy": policy,
            "sideEffects": "None",
            "timeoutSeconds": 2,
            "admissionReviewVersions": ["v1"],
        }],
    })
}

fn configmap(name: &str, policy: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "default", "labels": {"policy": policy}}})
}

#[tokio::test]
async fn failure_policies_of_unreachable_webhooks() {
    let emulator = Emulator::builder().start().await.unwrap();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    emulator
        .create_object(config("fail", "Fail", port))
        .await
        .unwrap();
    emulator
        .create_object(config("ignore", "Ignore", port))
        .await
        .unwrap();

    let error = emulator
        .create_object(configmap("a", "Fail"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("failed calling webhook \"fail.example.test\""),
        "{error}"
    );
    assert!(emulator.create_object(configmap("b", "Ignore")).await.is_ok());
    // Not matched by any objectSelector: no call at all.
    assert!(emulator.create_object(configmap("c", "none")).await.is_ok());
}
