//! Probabilistic faults, the request log and the chaos driver, over real HTTP.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kopf_testing::{
    Chaos, ChaosPlan, Emulator, EmulatorHandle, FaultKind, FaultMatch, retry_after_violations,
};
use kube::api::{Api, WatchEvent, WatchParams};
use kube::{Client, Config};
use serde_json::json;

fn client_for(emu: &EmulatorHandle) -> Client {
    let mut cfg = Config::new(emu.url().parse().unwrap());
    cfg.default_namespace = "default".into();
    // kube 5 retries 429/503/504 by default; these tests want to see every answer.
    cfg.default_retry = false;
    Client::try_from(cfg).unwrap()
}

async fn configmap(emu: &EmulatorHandle, name: &str) {
    emu.apply_object(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}}),
    )
    .await
    .unwrap();
}

fn code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_429_carries_retry_after_and_the_log_shows_an_early_repeat() {
    let emu = Emulator::builder().start().await.unwrap();
    configmap(&emu, "a").await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client_for(&emu));
    emu.faults().record_requests(true);
    emu.faults().fail_next(
        1,
        FaultMatch::verb_resource("get", "configmaps"),
        FaultKind::TooManyRequests { retry_after_secs: 3 },
    );
    assert_eq!(code(cms.get("a").await.unwrap_err()), 429);
    cms.get("a").await.unwrap();
    let log = emu.faults().requests();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        (log[0].status, log[0].retry_after),
        (429, Some(Duration::from_secs(3)))
    );
    assert_eq!((log[1].status, log[1].retry_after), (200, None));
    assert!(log[0].arrived <= log[0].answered && log[0].answered <= log[1].arrived);
    let violations = retry_after_violations(&log);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].contains("get configmaps default/a"),
        "{violations:?}"
    );
}

#[tokio::test]
async fn ratio_faults_over_http_are_reproducible_by_seed() {
    let emu = Emulator::builder().start().await.unwrap();
    configmap(&emu, "a").await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client_for(&emu));
    let mut runs = Vec::new();
    for _ in 0..2 {
        emu.faults().clear();
        emu.faults().seed(42);
        emu.faults().fail_ratio(
            0.2,
            FaultMatch::verb_resource("get", "configmaps"),
            FaultKind::Status(503),
        );
        let mut outcomes = Vec::new();
        for _ in 0..100 {
            outcomes.push(cms.get("a").await.err().map(code));
        }
        runs.push(outcomes);
    }
    assert_eq!(runs[0], runs[1], "the same seed gave different faults");
    let failed = runs[0].iter().filter(|o| o.is_some()).count();
    assert!((5..=40).contains(&failed), "{failed} of 100 failed at 20%");
    assert!(runs[0].iter().flatten().all(|c| *c == 503));
}

#[tokio::test]
async fn the_chaos_driver_closes_watches_and_expires_history_periodically() {
    let emu = Emulator::builder().start().await.unwrap();
    configmap(&emu, "a").await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client_for(&emu));
    let rv = emu.resource_version().to_string();
    configmap(&emu, "b").await;
    let chaos = Chaos::start(
        &emu,
        ChaosPlan {
            close_watches_every: Some(Duration::from_millis(200)),
            expire_history_every: Some(Duration::from_millis(300)),
        },
    );
    // A watch from an old position ends (closed), and after an expiry a new watch from
    // that position gets 410 Gone.
    let start = Instant::now();
    let mut gone = false;
    while !gone {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no 410 after the chaos driver ran"
        );
        let stream = match cms.watch(&WatchParams::default(), &rv).await {
            Ok(stream) => stream,
            Err(e) => {
                gone = code(e) == 410;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = futures::StreamExt::next(&mut stream).await {
            if let Ok(WatchEvent::Error(status)) = event
                && status.code == 410
            {
                gone = true;
            }
        }
    }
    let counts = chaos.stop();
    assert!(
        counts.watch_closes >= 1 && counts.history_expiries >= 1,
        "{counts:?}"
    );
}
