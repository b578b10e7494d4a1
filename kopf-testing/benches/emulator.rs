//! Emulator benchmark (harness = false): hold 10,000 custom objects, then sustain merge-patch
//! writes over HTTP from concurrent kube-rs clients while two watchers consume every event.
//! Reports create rate, write rate, watch delivery and RSS per stored object.
//!
//! Run: `cargo bench -p kopf-testing --bench emulator` (env: BENCH_OBJECTS, BENCH_SECS, BENCH_CONCURRENCY).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use serde_json::json;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // Ignore the libtest-style arguments cargo bench passes.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

#[allow(clippy::too_many_lines)] // split under issue 19
async fn run() {
    let objects = env_or("BENCH_OBJECTS", 10_000);
    let secs = env_or("BENCH_SECS", 5) as u64;
    let concurrency = env_or("BENCH_CONCURRENCY", 16);

    let emu = kopf_testing::Emulator::builder()
        .history_window(1000)
        .start()
        .await
        .unwrap();
    emu.apply_yaml(include_str!("../tests/data/crd.yaml"))
        .await
        .unwrap();
    let mut cfg = kube::Config::new(emu.url().parse().unwrap());
    cfg.default_retry = false;
    let client = kube::Client::try_from(cfg).unwrap();
    let gvk = GroupVersionKind::gvk("kopf.dev", "v1", "KopfExample");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "kopfexamples");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);

    // Phase 1: create N objects over HTTP.
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    for _ in 0..concurrency {
        let api = api.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= objects {
                    break;
                }
                let obj: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
                    "metadata": {"name": format!("obj-{i:05}"), "labels": {"bench": "yes", "shard": (i % 10).to_string()}},
                    "spec": {"duration": "1m", "field": "value", "items": ["item1", "item2"], "counter": 0}
                }))
                .unwrap();
                api.create(&PostParams::default(), &obj).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let create_secs = t0.elapsed().as_secs_f64();
    let rss1 = rss_kib();
    assert_eq!(emu.count_objects("kopf.dev", "kopfexamples"), objects);

    // Phase 2: two watchers from the current RV, then sustained patches.
    let start_rv = emu.resource_version().to_string();
    let seen: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut watchers = vec![];
    for counter in &seen {
        let api = api.clone();
        let counter = counter.clone();
        let rv = start_rv.clone();
        watchers.push(tokio::spawn(async move {
            let mut s = api
                .watch(&WatchParams::default().timeout(3600), &rv)
                .await
                .unwrap()
                .boxed();
            while let Ok(Some(ev)) = s.try_next().await {
                if let WatchEvent::Modified(_) = ev {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let writes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let t1 = Instant::now();
    let mut tasks = vec![];
    for w in 0..concurrency {
        let api = api.clone();
        let writes = writes.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < deadline {
                let name = format!("obj-{:05}", (i * 7919) % objects);
                let n = writes.fetch_add(1, Ordering::Relaxed) + 1; // never 0: objects start at 0 (no-op)
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"counter": n}})),
                )
                .await
                .unwrap();
                i += concurrency;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let write_secs = t1.elapsed().as_secs_f64();
    let total_writes = writes.load(Ordering::Relaxed);
    // Wait until both watchers got every event (or 30 s).
    let wait_start = Instant::now();
    while seen.iter().any(|c| c.load(Ordering::Relaxed) < total_writes)
        && wait_start.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lag = wait_start.elapsed().as_secs_f64();
    let delivered: Vec<u64> = seen.iter().map(|c| c.load(Ordering::Relaxed)).collect();

    println!("emulator benchmark (2 tokio workers; clients in the same process)");
    println!("  objects held:            {objects}");
    println!(
        "  create rate:             {:.0} creates/s ({concurrency} concurrent clients)",
        objects as f64 / create_secs
    );
    println!(
        "  RSS delta:               {} KiB -> {:.0} bytes/object",
        rss1.saturating_sub(rss0),
        (rss1.saturating_sub(rss0) * 1024) as f64 / objects as f64
    );
    println!(
        "  sustained writes:        {:.0} patches/s over {write_secs:.1}s ({total_writes} total)",
        total_writes as f64 / write_secs
    );
    println!(
        "  watch delivery:          {delivered:?} of {total_writes} MODIFIED events, drained {lag:.2}s after the last write"
    );
    for w in watchers {
        w.abort();
    }
    emu.shutdown().await;
}
