//! One invoke round-trip through the real ABI with a ~2 KB object body, including the
//! JSON work on both sides: build the `Invocation` → serialise → `invoke` in the plugin
//! (which parses it, runs the handler, serialises the outcome) → parse the `Outcome`.
//!
//! The plugins are built with `cargo build --release` into `$CARGO_TARGET_DIR` (or
//! `<workspace>/target`), like the e2e suites do.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use kopf_abi::protocol::Invocation;
use kopf_cli::plugin::{HandlerRef, PluginSet};
use serde_json::{Value, json};

fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(d) if PathBuf::from(&d).is_absolute() => PathBuf::from(d),
        Some(d) => workspace_root().join(d),
        None => workspace_root().join("target"),
    }
}

/// Builds a plugin package in release mode and returns its shared library.
fn build_plugin(package: &str) -> Option<PathBuf> {
    if !workspace_root()
        .join("tests/fixtures")
        .join(package.trim_start_matches("fixture-"))
        .exists()
    {
        eprintln!("skipping {package}: fixture not present");
        return None;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--lib", "-p", package])
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir())
        .status()
        .ok()?;
    if !status.success() {
        eprintln!("skipping {package}: cargo build failed");
        return None;
    }
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        package.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    Some(target_dir().join("release").join(file))
}

/// A KopfExample body of about 2 KB.
fn body() -> Value {
    let items: Vec<Value> = (0..36)
        .map(|i| json!({"name": format!("item-{i:02}"), "value": i * 7, "on": i % 2 == 0}))
        .collect();
    let body = json!({
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfExample",
        "metadata": {
            "name": "kopf-example-1",
            "namespace": "default",
            "uid": "6d0c5f2e-2b1a-4f9b-9c1e-8f0d4b3a2c10",
            "resourceVersion": "123456",
            "generation": 3,
            "creationTimestamp": "2024-05-01T12:00:00Z",
            "labels": {"somelabel": "somevalue", "app": "kopf-example"},
            "annotations": {"someannotation": "somevalue"},
            "finalizers": ["kopf.zalando.org/KopfFinalizerMarker"],
        },
        "spec": {"duration": "1m", "field": "value", "items": items},
        "status": {},
    });
    let size = body.to_string().len();
    assert!((1800..2600).contains(&size), "body is {size} bytes");
    body
}

fn invocation(body: &Value) -> Invocation {
    Invocation {
        body: Some(body.clone()),
        reason: Some("create".into()),
        started: Some("2024-05-01T12:00:00Z".into()),
        ..Invocation::default()
    }
}

fn handler(set: &PluginSet, id: &str) -> HandlerRef {
    set.handlers()
        .iter()
        .find(|h| h.id() == id)
        .expect("handler")
        .clone()
}

fn bench_invoke(c: &mut Criterion) {
    let body = body();
    let mut group = c.benchmark_group("invoke_2kb");
    // The host's share alone: build + serialise the invocation, parse a same-sized outcome.
    let outcome_json = serde_json::to_string(&json!({"result": {"echo": body["spec"]}})).expect("json");
    group.bench_function("host_json_only", |b| {
        b.iter(|| {
            let payload = serde_json::to_string(&invocation(black_box(&body))).expect("json");
            let outcome: kopf_abi::protocol::Outcome =
                serde_json::from_str(black_box(&outcome_json)).expect("json");
            black_box((payload, outcome))
        })
    });
    for (package, id) in [
        ("fixture-sdk-plugin-a", "create_fn"),
        ("fixture-raw-plugin", "create_fn"),
    ] {
        let Some(path) = build_plugin(package) else {
            continue;
        };
        let set = match PluginSet::load(&[&path]) {
            Ok(set) => set,
            Err(e) => {
                eprintln!("skipping {package}: {e}");
                continue;
            }
        };
        let h = handler(&set, id);
        // Sanity: the round trip really carries the spec.
        let outcome = set.invoke_blocking(&h, &invocation(&body)).expect("invoke");
        assert!(outcome.result.is_some());

        group.bench_function(format!("{package}/blocking"), |b| {
            b.iter(|| {
                black_box(
                    set.invoke_blocking(&h, &invocation(black_box(&body)))
                        .expect("invoke"),
                )
            })
        });
        // The async paths, measured from inside a runtime worker task.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        group.bench_function(format!("{package}/async_block_in_place"), |b| {
            b.iter_custom(|iters| {
                let (set, h, body) = (set.clone(), h.clone(), body.clone());
                rt.block_on(rt.spawn(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(
                            set.invoke_in_place(&h, &invocation(black_box(&body)))
                                .expect("invoke"),
                        );
                    }
                    start.elapsed()
                }))
                .expect("task")
            })
        });
        group.bench_function(format!("{package}/async_spawn_blocking"), |b| {
            b.iter_custom(|iters| {
                let (set, h, body) = (set.clone(), h.clone(), body.clone());
                rt.block_on(rt.spawn(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(
                            set.invoke(&h, &invocation(black_box(&body)))
                                .await
                                .expect("invoke"),
                        );
                    }
                    start.elapsed()
                }))
                .expect("task")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_invoke);
criterion_main!(benches);
