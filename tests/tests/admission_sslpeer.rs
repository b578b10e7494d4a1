//! Kopf's `sslpeer` end to end: the real `kopf` binary with `--webhook-verify-cafile`
//! verifies the webhook clients' certificates and hands a verified client's certificate to
//! the handler in `getpeercert()`'s shape; the `sslpeer` fixture's handler echoes it in its
//! denial. `curl` is the client, with and without a certificate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kopf_e2e::cluster::TestCluster;
use kopf_e2e::{KopfProcess, plugin_path, workspace_root};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);

/// A CA and a client certificate it signed, as PEM files in `dir`: `{name}-ca.pem`,
/// `{name}.pem`, `{name}.key`.
fn client_pki(dir: &Path, name: &str) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![format!("{name}.example.test")]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "kopf tests");
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join(format!("{name}-ca.pem")), ca.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

struct Server {
    kopf: KopfProcess,
    port: u16,
    cadump: PathBuf,
}

fn start(cluster: &TestCluster, dir: &Path, mode: &str) -> Server {
    let kubeconfig = dir.join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).unwrap();
    let plugin = plugin_path("fixture-sslpeer").unwrap();
    let cadump = dir.join(format!("server-{mode}-ca.pem"));
    let mut kopf = KopfProcess::spawn_with_env(
        [
            "run".as_ref(),
            "-A".as_ref(),
            "--standalone".as_ref(),
            "--webhook-server".as_ref(),
            "https://127.0.0.1:0".as_ref(),
            "--webhook-host".as_ref(),
            "localhost".as_ref(),
            "--webhook-cadump".as_ref(),
            cadump.as_os_str(),
            "--webhook-verify-cafile".as_ref(),
            dir.join("trusted-ca.pem").as_os_str(),
            "--webhook-verify-mode".as_ref(),
            mode.as_ref(),
            plugin.as_os_str(),
        ],
        [("KUBECONFIG", kubeconfig.as_os_str())],
    )
    .unwrap();
    let line = kopf
        .wait_for_line("Serving admission webhooks at https://", DEADLINE)
        .unwrap();
    let port = line
        .split("https://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Server { kopf, port, cadump }
}

fn review() -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "kopf.dev", "version": "v1", "kind": "KopfExample"},
            "resource": {"group": "kopf.dev", "version": "v1", "resource": "kopfexamples"},
            "operation": "CREATE",
            "userInfo": {"username": "tester"},
            "object": {"apiVersion": "kopf.dev/v1", "kind": "KopfExample",
                       "metadata": {"name": "x", "namespace": "default"}, "spec": {}},
        }
    })
    .to_string()
}

/// POSTs a review with curl, with the client certificate `cert` (a name of [`client_pki`])
/// or none: the sslpeer the handler saw, or curl's failure.
fn ask(server: &Server, dir: &Path, cert: Option<&str>) -> Result<Value, String> {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--max-time", "20"])
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", server.port)])
        .arg("--cacert")
        .arg(&server.cadump)
        .args([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &review(),
        ]);
    if let Some(name) = cert {
        curl.arg("--cert").arg(dir.join(format!("{name}.pem")));
        curl.arg("--key").arg(dir.join(format!("{name}.key")));
    }
    let out = curl
        .arg(format!("https://localhost:{}/report_peer", server.port))
        .output()
        .expect("curl is needed for this test (apt-get install curl)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let answer: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let message = answer
        .pointer("/response/status/message")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no message in {answer}"));
    Ok(serde_json::from_str(message).unwrap_or_else(|e| panic!("{e}: {message}")))
}

fn assert_is_trusted(peer: &Value) {
    assert_eq!(
        peer["subject"],
        json!([[["commonName", "trusted"]], [["organizationName", "kopf tests"]]]),
        "{peer}"
    );
    assert_eq!(peer["issuer"], json!([[["commonName", "trusted CA"]]]), "{peer}");
    assert_eq!(peer["version"], 3, "{peer}");
    assert_eq!(
        peer["subjectAltName"],
        json!([["DNS", "trusted.example.test"]]),
        "{peer}"
    );
    for key in ["serialNumber", "notBefore", "notAfter"] {
        assert!(peer[key].as_str().is_some_and(|s| !s.is_empty()), "{key}: {peer}");
    }
}

/// `required` (the default): a client with a certificate of the CA is served and its
/// certificate reaches the handler; clients without one, or with one of another CA, are
/// refused at the handshake. `optional`: the client without a certificate is served with
/// `sslpeer` `{}` (Kopf's default for no peer certificate); a verified one as before.
#[test]
fn webhook_clients_certificates_reach_handlers_as_sslpeer() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = runtime.block_on(TestCluster::start()).unwrap();
    let crd = std::fs::read_to_string(workspace_root().join("examples/crd.yaml")).unwrap();
    runtime.block_on(cluster.apply_yaml(&crd)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    client_pki(dir.path(), "trusted");
    client_pki(dir.path(), "stranger");

    let mut server = start(&cluster, dir.path(), "required");
    let logs = |server: &Server| server.kopf.lines().join("\n");
    let peer = ask(&server, dir.path(), Some("trusted")).unwrap_or_else(|e| panic!("{e}\n{}", logs(&server)));
    assert_is_trusted(&peer);
    assert!(ask(&server, dir.path(), None).is_err(), "no certificate: refused");
    assert!(
        ask(&server, dir.path(), Some("stranger")).is_err(),
        "another CA's certificate: refused"
    );
    server.kopf.stop_gracefully(DEADLINE).unwrap();

    let mut server = start(&cluster, dir.path(), "optional");
    let peer = ask(&server, dir.path(), None).unwrap_or_else(|e| panic!("{e}\n{}", logs(&server)));
    assert_eq!(peer, json!({}));
    assert_is_trusted(&ask(&server, dir.path(), Some("trusted")).unwrap());
    assert!(
        ask(&server, dir.path(), Some("stranger")).is_err(),
        "an invalid certificate is refused even when optional"
    );
    server.kopf.stop_gracefully(DEADLINE).unwrap();
}
