//! Re-login on 401 end to end: the real `kopf` binary with the `relogin-token` fixture,
//! whose login handler reads the token from a file that the test rotates. The emulator
//! allows any token, so the API's "your token is no longer valid" is injected as a 401
//! fault; the emulator's per-user counters (by bearer token) show which credentials were
//! used.

mod reactor_common;

use kopf_testing::{FaultKind, FaultMatch};
use reactor_common::{Cluster, DEADLINE, fixture};
use serde_json::json;

fn write_login(cluster: &Cluster, token: &str) -> std::path::PathBuf {
    let path = cluster.path("login.json");
    let info = json!({"server": cluster.emu.url(), "token": token, "default_namespace": "default"});
    std::fs::write(&path, info.to_string()).unwrap();
    path
}

fn requests_by(cluster: &Cluster, token: &str) -> u64 {
    cluster.emu.counters().by_user.get(token).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_re_runs_the_login_and_retries_with_the_fresh_token() {
    // Emulator-only: injected 401s and tokens of its own.
    let cluster = Cluster::start_emulator().await;
    let login = write_login(&cluster, "token-1");
    let plugin = fixture("fixture-relogin-token");
    let mut kopf = cluster.spawn_kopf(&plugin, &[("KOPF_RELOGIN_FILE", login.display().to_string())]);
    assert!(
        requests_by(&cluster, "token-1") > 0,
        "the login handler's token is used"
    );

    cluster.create("kex-1", "one").await;
    cluster
        .wait_obj("kex-1", "handled with the first token", Some(&kopf), |o| {
            (o?.pointer("/status/created") == Some(&json!({"handled": true}))).then_some(())
        })
        .await;
    assert_eq!(requests_by(&cluster, "token-2"), 0);

    // The token is rotated; the API starts refusing the old one.
    write_login(&cluster, "token-2");
    cluster.emu.expect_emulator("fault injection").faults().fail_next(
        1,
        FaultMatch::verb_resource("patch", "kopfexamples"),
        FaultKind::Status(401),
    );
    cluster.create("kex-2", "one").await;
    cluster
        .wait_obj("kex-2", "handled after re-login", Some(&kopf), |o| {
            (o?.pointer("/status/created") == Some(&json!({"handled": true}))).then_some(())
        })
        .await;
    tokio::task::block_in_place(|| kopf.wait_for_line("Re-authenticated", DEADLINE)).unwrap();
    let lines = kopf.lines().join("\n");
    assert!(lines.contains("401 Unauthorized: re-authenticating"), "{lines}");
    assert_eq!(cluster.emu.counters().status(401), 1);
    assert!(requests_by(&cluster, "token-2") > 0, "the fresh token is used");
    let logins = lines.matches("logging in with token").count();
    assert_eq!(logins, 2, "one login at start, one re-login: {lines}");

    // The operator keeps handling objects with the new token only.
    let before = requests_by(&cluster, "token-1");
    cluster.create("kex-3", "one").await;
    cluster
        .wait_obj("kex-3", "handled with the fresh token", Some(&kopf), |o| {
            (o?.pointer("/status/created") == Some(&json!({"handled": true}))).then_some(())
        })
        .await;
    assert_eq!(
        requests_by(&cluster, "token-1"),
        before,
        "the old token is no longer used"
    );

    kopf.signal("TERM").unwrap();
    let status = tokio::task::block_in_place(|| kopf.wait_exit(DEADLINE)).unwrap();
    assert_eq!(status.code(), Some(0), "{}", kopf.lines().join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_re_login_passes_the_401_through_and_backs_off() {
    // Emulator-only: injected 401s and tokens of its own.
    let cluster = Cluster::start_emulator().await;
    let login = write_login(&cluster, "token-1");
    let plugin = fixture("fixture-relogin-token");
    let mut kopf = cluster.spawn_kopf(&plugin, &[("KOPF_RELOGIN_FILE", login.display().to_string())]);

    // The login source breaks; two refusals in a row.
    std::fs::write(&login, "not json").unwrap();
    cluster.emu.expect_emulator("fault injection").faults().fail_next(
        2,
        FaultMatch::verb_resource("patch", "kopfexamples"),
        FaultKind::Status(401),
    );
    cluster.create("kex-1", "one").await;
    tokio::task::block_in_place(|| kopf.wait_for_line("re-authentication failed", DEADLINE)).unwrap();
    // The request failed and is retried by the reactor with the old, still valid token
    // once the faults are used up.
    cluster
        .wait_obj("kex-1", "handled despite the failed re-login", Some(&kopf), |o| {
            (o?.pointer("/status/created") == Some(&json!({"handled": true}))).then_some(())
        })
        .await;
    let lines = kopf.lines().join("\n");
    let failed_logins = lines.matches("re-authentication failed").count();
    assert!(
        (1..=2).contains(&failed_logins),
        "at most one failing login per 401 and none while backing off: {lines}"
    );
    assert_eq!(requests_by(&cluster, "token-2"), 0);

    kopf.signal("TERM").unwrap();
    let status = tokio::task::block_in_place(|| kopf.wait_exit(DEADLINE)).unwrap();
    assert_eq!(status.code(), Some(0), "{}", kopf.lines().join("\n"));
}

/// Kopf's `ConnectionInfo.expiration`: credentials are renewed before they expire, with no
/// 401 needed. The first token expires 7 s after the start (renewed 5 s before that); the
/// login file meanwhile holds a second one, which the operator then uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_credentials_are_renewed_before_the_expiration() {
    let cluster = Cluster::start_emulator().await;
    let login = cluster.path("login.json");
    let expiration = kopf_cli::persistence::times::Timestamp::now()
        .plus_seconds(7.0)
        .to_string();
    let info = json!({"server": cluster.emu.url(), "token": "token-1", "expiration": expiration});
    std::fs::write(&login, info.to_string()).unwrap();
    let plugin = fixture("fixture-relogin-token");
    let mut kopf = cluster.spawn_kopf(&plugin, &[("KOPF_RELOGIN_FILE", login.display().to_string())]);
    assert!(requests_by(&cluster, "token-1") > 0);
    write_login(&cluster, "token-2");

    // Objects keep the operator making requests until it switches tokens by itself.
    let deadline = std::time::Instant::now() + DEADLINE;
    for n in 0.. {
        let name = format!("kex-exp-{n}");
        cluster.create(&name, "one").await;
        cluster
            .wait_obj(&name, "handled", Some(&kopf), |o| {
                (o?.pointer("/status/created") == Some(&json!({"handled": true}))).then_some(())
            })
            .await;
        if requests_by(&cluster, "token-2") > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the expiring token was never renewed:\n{}",
            kopf.lines().join("\n")
        );
    }
    let lines = kopf.lines().join("\n");
    assert!(
        lines.contains("The credentials are about to expire: re-authenticating"),
        "{lines}"
    );
    assert_eq!(cluster.emu.counters().status(401), 0, "{lines}");
    assert_eq!(lines.matches("logging in with token").count(), 2, "{lines}");
    kopf.signal("TERM").unwrap();
    let status = tokio::task::block_in_place(|| kopf.wait_exit(DEADLINE)).unwrap();
    assert_eq!(status.code(), Some(0), "{lines}");
}
