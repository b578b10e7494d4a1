//! The emulator driven by kube-rs clients over real HTTP.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kopf_testing::{Emulator, EmulatorHandle, FaultKind, FaultMatch};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, WatchEvent, WatchParams,
};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{Client, Config};
use serde_json::{Value, json};

const CRD: &str = include_str!("data/crd.yaml");

async fn start() -> (EmulatorHandle, Client) {
    let emu = Emulator::builder()
        .bookmark_interval(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let client = client_for(&emu);
    (emu, client)
}

fn client_for(emu: &EmulatorHandle) -> Client {
    let mut cfg = Config::new(emu.url().parse().unwrap());
    cfg.default_namespace = "default".into();
    cfg.read_timeout = Some(Duration::from_secs(30));
    // kube 5 retries 429/503/504 by default; the tests want to see every answer.
    cfg.default_retry = false;
    Client::try_from(cfg).unwrap()
}

/// Poll `f` every 20 ms until it returns Some, or panic after 10 s with `what`.
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn api_code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn kex_api(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kopf.dev", "v1", "KopfExample");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "kopfexamples");
    Api::namespaced_with(client.clone(), "default", &ar)
}

fn kex(name: &str, extra: Value) -> DynamicObject {
    let mut v = json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample", "metadata": {"name": name},
        "spec": {"field": "value"}});
    json_patch::merge(&mut v, &extra);
    serde_json::from_value(v).unwrap()
}

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).unwrap()
}

#[tokio::test]
async fn crud_conflicts_and_errors() {
    let (emu, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let created = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let rv1: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    // 409 AlreadyExists.
    assert_eq!(
        api_code(
            cms.create(&PostParams::default(), &cm("a", json!({})))
                .await
                .unwrap_err()
        ),
        409
    );
    // generateName.
    let mut g = cm("", json!({}));
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let gen_obj = cms.create(&PostParams::default(), &g).await.unwrap();
    assert!(gen_obj.metadata.name.unwrap().starts_with("gen-"));
    // Missing namespace: 404.
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    assert_eq!(
        api_code(
            other
                .create(&PostParams::default(), &cm("a", json!({})))
                .await
                .unwrap_err()
        ),
        404
    );
    // Replace with the current RV works and bumps the RV; a stale RV is a 409.
    let mut upd = created.clone();
    upd.data = Some([("k".to_string(), "w".to_string())].into());
    let replaced = cms.replace("a", &PostParams::default(), &upd).await.unwrap();
    let rv2: u64 = replaced
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    assert_eq!(
        api_code(cms.replace("a", &PostParams::default(), &upd).await.unwrap_err()),
        409
    );
    // Merge patch, then a JSON patch whose `test` fails: 422.
    let p = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"x": "y"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.data.unwrap()["x"], "y");
    let jp = serde_json::from_value(json!([{"op": "test", "path": "/data/x", "value": "WRONG"}])).unwrap();
    assert_eq!(
        api_code(
            cms.patch("a", &PatchParams::default(), &Patch::<()>::Json(jp))
                .await
                .unwrap_err()
        ),
        422
    );
    // A no-op patch keeps the resourceVersion.
    let before = cms.get("a").await.unwrap().metadata.resource_version;
    let after = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"x": "y"}})),
        )
        .await
        .unwrap();
    assert_eq!(before, after.metadata.resource_version);
    // Delete, then 404.
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_code(cms.get("a").await.unwrap_err()), 404);
    assert!(emu.counters().get("create", "configmaps") >= 3);
    emu.shutdown().await;
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // split under issue 19
async fn crd_lifecycle_status_rules_and_generation() {
    let (emu, client) = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_yaml::from_str(CRD).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let got = crds.get("kopfexamples.kopf.dev").await.unwrap();
    let conds = got.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "NamesAccepted" && c.status == "True")
    );
    // Served immediately, visible in discovery.
    let discovery = kube::Discovery::new(client.clone())
        .filter(&["kopf.dev"])
        .run()
        .await
        .unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("kopf.dev", "v1", "KopfExample"))
        .unwrap();
    assert_eq!(ar.plural, "kopfexamples");
    assert!(
        caps.subresources
            .iter()
            .any(|(r, _)| r.plural == "kopfexamples/status" || r.plural == "status")
    );

    // Aggregated discovery (2 requests) agrees.
    let agg = kube::Discovery::new(client.clone())
        .run_aggregated()
        .await
        .unwrap();
    let (ar2, caps2) = agg
        .resolve_gvk(&GroupVersionKind::gvk("kopf.dev", "v1", "KopfExample"))
        .unwrap();
    assert_eq!(ar2.plural, "kopfexamples");
    assert_eq!(caps2.scope, kube::discovery::Scope::Namespaced);
    assert!(
        agg.resolve_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap"))
            .is_some()
    );
    assert!(
        agg.resolve_gvk(&GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"))
            .is_some()
    );

    let api = kex_api(&client);
    // Status is dropped on create when the status subresource exists; generation starts at 1.
    let o = api
        .create(&PostParams::default(), &kex("x", json!({"status": {"a": 1}})))
        .await
        .unwrap();
    assert_eq!(o.metadata.generation, Some(1));
    assert!(o.data.get("status").is_none());
    // Spec change bumps generation; metadata change does not.
    let o = api
        .patch(
            "x",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"field": "v2"}})),
        )
        .await
        .unwrap();
    assert_eq!(o.metadata.generation, Some(2));
    let o = api
        .patch(
            "x",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"l": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(o.metadata.generation, Some(2));
    // Status on the main resource is ignored.
    let o = api
        .patch(
            "x",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"main": true}})),
        )
        .await
        .unwrap();
    assert!(o.data.get("status").is_none());
    // /status writes status only (spec and labels changes ignored), generation unchanged.
    let o = api
        .patch_status(
            "x",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"ok": 1}, "spec": {"field": "HACK"}, "metadata": {"labels": {"l": "2"}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(o.data["status"]["ok"], 1);
    assert_eq!(o.data["spec"]["field"], "v2");
    assert_eq!(o.metadata.labels.unwrap()["l"], "1");
    assert_eq!(o.metadata.generation, Some(2));
    // PUT without resourceVersion on a custom resource is refused (422), with a stale one 409.
    let mut body = api.get("x").await.unwrap();
    body.metadata.resource_version = None;
    assert_eq!(
        api_code(api.replace("x", &PostParams::default(), &body).await.unwrap_err()),
        422
    );
    body.metadata.resource_version = Some("1".into());
    assert_eq!(
        api_code(api.replace("x", &PostParams::default(), &body).await.unwrap_err()),
        409
    );
    // Strategic merge is not for custom resources: 415.
    let e = api
        .patch(
            "x",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(e), 415);

    // Deleting the CRD stops serving it, removes its objects (DELETED events) and ends watches.
    let rv = emu.resource_version().to_string();
    let mut w = api.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    crds.delete("kopfexamples.kopf.dev", &DeleteParams::default())
        .await
        .unwrap();
    let mut deleted = 0;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), w.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        if let WatchEvent::Deleted(_) = ev {
            deleted += 1;
        }
    }
    assert_eq!(deleted, 1);
    assert_eq!(api_code(api.get("x").await.unwrap_err()), 404);
    assert_eq!(emu.count_objects("kopf.dev", "kopfexamples"), 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn schema_pruning_and_defaults() {
    let (emu, client) = start().await;
    let crd = CRD.replace(
        "              type: object\n              x-kubernetes-preserve-unknown-fields: true\n            status:",
        "              type: object\n              properties:\n                field: {type: string}\n                \
         replicas: {type: integer, default: 3}\n            status:",
    );
    emu.apply_yaml(&crd).await.unwrap();
    let api = kex_api(&client);
    let o = api
        .create(&PostParams::default(), &kex("p", json!({"spec": {"junk": 1}})))
        .await
        .unwrap();
    assert_eq!(o.data["spec"], json!({"field": "value", "replicas": 3}));
    // fieldValidation=Strict turns pruning into a 400 (what kubectl sends by default).
    let strict = PatchParams {
        field_validation: Some(kube::api::ValidationDirective::Strict),
        ..Default::default()
    };
    let e = api
        .patch("p", &strict, &Patch::Merge(json!({"spec": {"bogus": 1}})))
        .await
        .unwrap_err();
    assert_eq!(api_code(e), 400);
    // dryRun=All: answered, not stored.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let o = api.create(&dry, &kex("dry", json!({}))).await.unwrap();
    assert_eq!(o.metadata.name.as_deref(), Some("dry"));
    assert_eq!(api_code(api.get("dry").await.unwrap_err()), 404);
    let dry_del = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    api.delete("p", &dry_del).await.unwrap();
    assert!(api.get_opt("p").await.unwrap().is_some());
    emu.shutdown().await;
}

#[tokio::test]
async fn finalizers_block_deletion_and_no_new_ones() {
    let (emu, client) = start().await;
    emu.apply_yaml(CRD).await.unwrap();
    let api = kex_api(&client);
    api.create(
        &PostParams::default(),
        &kex("f", json!({"metadata": {"finalizers": ["kopf.dev/x"]}})),
    )
    .await
    .unwrap();
    let rv0 = emu.resource_version().to_string();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let o = api.get("f").await.unwrap();
    assert!(o.metadata.deletion_timestamp.is_some());
    assert_eq!(o.metadata.generation, Some(2));
    // No new finalizers while deleting: 422.
    let e = api
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["kopf.dev/x", "new"]}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(e), 422);
    // Removing the last finalizer deletes it; a watch sees MODIFIED then DELETED.
    let mut stream = api.watch(&WatchParams::default(), &rv0).await.unwrap().boxed();
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_code(api.get("f").await.unwrap_err()), 404);
    let mut kinds = vec![];
    while kinds.last() != Some(&"DELETED") {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Modified(_) => kinds.push("MODIFIED"),
            WatchEvent::Deleted(o) => {
                assert!(o.metadata.deletion_timestamp.is_some());
                kinds.push("DELETED")
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(kinds, ["MODIFIED", "MODIFIED", "DELETED"]);
    emu.shutdown().await;
}

#[tokio::test]
async fn owner_references_garbage_collection() {
    let (emu, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let owner = cms
        .create(&PostParams::default(), &cm("owner", json!({})))
        .await
        .unwrap();
    let mut child = cm("child", json!({}));
    child.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.unwrap()
        }))
        .unwrap(),
    ]);
    cms.create(&PostParams::default(), &child).await.unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    wait_for("the child to be collected", || {
        let cms = cms.clone();
        async move { cms.get_opt("child").await.unwrap().is_none().then_some(()) }
    })
    .await;
    // Namespace deletion removes the content, then the namespace.
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "tmp"}})).unwrap(),
    )
    .await
    .unwrap();
    let tmp: Api<ConfigMap> = Api::namespaced(client.clone(), "tmp");
    tmp.create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();
    nss.delete("tmp", &DeleteParams::default()).await.unwrap();
    wait_for("namespace tmp to go", || {
        let nss = nss.clone();
        async move { nss.get_opt("tmp").await.unwrap().is_none().then_some(()) }
    })
    .await;
    assert!(tmp.get_opt("c").await.unwrap().is_none());
    // Namespaces carry the automatic name label; selectable like on a real cluster.
    let labelled = nss
        .list(&ListParams::default().labels("kubernetes.io/metadata.name=default"))
        .await
        .unwrap();
    assert_eq!(labelled.items.len(), 1);
    emu.shutdown().await;
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // split under issue 19
async fn label_field_selectors_and_pagination() {
    let (emu, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for i in 0..25 {
        let tier = ["a", "b", "c"][i % 3];
        cms.create(
            &PostParams::default(),
            &cm(&format!("cm-{i:02}"), json!({"tier": tier, "n": i.to_string()})),
        )
        .await
        .unwrap();
    }
    cms.create(&PostParams::default(), &cm("unlabelled", json!({})))
        .await
        .unwrap();
    let count = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            cms.list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(count("tier=a").await, 9);
    assert_eq!(count("tier==b").await, 8);
    assert_eq!(count("tier!=a").await, 17);
    assert_eq!(count("tier in (a,b)").await, 17);
    assert_eq!(count("tier notin (a,b)").await, 9);
    assert_eq!(count("tier").await, 25);
    assert_eq!(count("!tier").await, 1);
    assert_eq!(count("tier=a,n in (0,3,4)").await, 2);
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=cm-07"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let not_name = cms
        .list(&ListParams::default().fields("metadata.name!=cm-07"))
        .await
        .unwrap();
    assert_eq!(not_name.items.len(), 25);
    assert_eq!(
        api_code(
            cms.list(&ListParams::default().labels("tier in a"))
                .await
                .unwrap_err()
        ),
        400
    );
    // Pagination: 26 objects in pages of 10.
    let mut names = vec![];
    let mut lp = ListParams::default().limit(10);
    let mut pages = 0;
    loop {
        let page = cms.list(&lp).await.unwrap();
        pages += 1;
        names.extend(page.items.iter().map(|o| o.metadata.name.clone().unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = ListParams::default().limit(10).continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 26);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    // Continued pages show the objects as of the list's resourceVersion, as etcd's
    // snapshot does: changes after the first page are seen by a watch from that version.
    let first = cms.list(&ListParams::default().limit(10)).await.unwrap();
    let list_rv = first.metadata.resource_version.clone().unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    let last = names.last().unwrap().clone();
    let mut changed = cms.get(&last).await.unwrap();
    changed.data = Some([("after".to_string(), "the first page".to_string())].into());
    cms.replace(&last, &PostParams::default(), &changed)
        .await
        .unwrap();
    cms.delete("cm-20", &Default::default()).await.unwrap();
    let mut rest = vec![];
    let mut lp = ListParams::default().limit(10).continue_token(&token);
    loop {
        let page = cms.list(&lp).await.unwrap();
        assert_eq!(page.metadata.resource_version.as_deref(), Some(list_rv.as_str()));
        rest.extend(page.items);
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = ListParams::default().limit(10).continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(
        rest.len(),
        16,
        "{:?}",
        rest.iter().map(|o| &o.metadata.name).collect::<Vec<_>>()
    );
    let old_last = rest
        .iter()
        .find(|o| o.metadata.name.as_deref() == Some(last.as_str()))
        .unwrap();
    assert!(
        old_last.data.as_ref().is_none_or(|d| !d.contains_key("after")),
        "{old_last:?}"
    );
    assert!(rest.iter().any(|o| o.metadata.name.as_deref() == Some("cm-20")));
    // A continue token older than the history gets 410.
    let first = cms.list(&ListParams::default().limit(5)).await.unwrap();
    let token = first.metadata.continue_.unwrap();
    cms.create(&PostParams::default(), &cm("later", json!({})))
        .await
        .unwrap();
    emu.faults().expire_history();
    let e = cms
        .list(&ListParams::default().limit(5).continue_token(&token))
        .await
        .unwrap_err();
    assert_eq!(api_code(e), 410);
    emu.shutdown().await;
}

#[tokio::test]
async fn watch_from_resource_version_with_selectors_and_bookmarks() {
    let (emu, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("pre", json!({"w": "1"})))
        .await
        .unwrap();
    let rv = emu.resource_version().to_string();
    let mut stream = cms
        .watch(&WatchParams::default().labels("w=1"), &rv)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("one", json!({"w": "1"})))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("other", json!({"w": "2"})))
        .await
        .unwrap();
    // Leaving the selector is a DELETED for this watch; entering it an ADDED.
    cms.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"w": "0"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "other",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"w": "1"}}})),
    )
    .await
    .unwrap();
    let mut seen = vec![];
    let mut bookmarks = 0;
    while seen.len() < 3 || bookmarks == 0 {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => seen.push(format!("MODIFIED {}", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(b) => {
                let brv: u64 = b.metadata.resource_version.parse().unwrap();
                assert!(brv >= rv.parse::<u64>().unwrap());
                bookmarks += 1;
            }
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(seen, ["ADDED one", "DELETED one", "ADDED other"]);
    // Namespaced watches do not see other namespaces.
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "elsewhere"}})).unwrap(),
    )
    .await
    .unwrap();
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "elsewhere");
    elsewhere
        .create(&PostParams::default(), &cm("far", json!({"w": "1"})))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("near", json!({"w": "1"})))
        .await
        .unwrap();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Added(o) => {
                assert_eq!(o.metadata.name.as_deref(), Some("near"));
                break;
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn expired_history_gives_410_and_watcher_relists() {
    let emu = Emulator::builder()
        .history_window(5)
        .bookmark_interval(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let client = client_for(&emu);
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("c0", json!({})))
        .await
        .unwrap();
    let old_rv = emu.resource_version().to_string();
    for i in 1..10 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), json!({})))
            .await
            .unwrap();
    }
    // Older than the 5-event window: an ERROR event with a 410 Status.
    let mut s = cms.watch(&WatchParams::default(), &old_rv).await.unwrap().boxed();
    match tokio::time::timeout(Duration::from_secs(10), s.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Error(st) => {
            assert_eq!(st.code, 410);
            assert_eq!(st.reason, "Expired");
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    // kube-rs watcher: after expire + close it relists (a second Init).
    let mut w = watcher(cms.clone(), watcher::Config::default()).boxed();
    let mut inits = 0;
    let mut init_dones = 0;
    while init_dones < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap()
            .unwrap();
        match ev {
            Ok(watcher::Event::Init) => inits += 1,
            Ok(watcher::Event::InitDone) => {
                init_dones += 1;
                if init_dones == 1 {
                    cms.create(&PostParams::default(), &cm("x1", json!({})))
                        .await
                        .unwrap();
                    emu.faults().expire_history();
                    emu.faults().close_watches();
                }
            }
            _ => {}
        }
    }
    assert_eq!(inits, 2);
    let lists = emu.counters().get("list", "configmaps");
    assert!(lists >= 2, "watcher should have relisted, lists={lists}");
    emu.shutdown().await;
}

#[tokio::test]
async fn streaming_list_initial_events_end_bookmark() {
    let (emu, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("s{i}"), json!({})))
            .await
            .unwrap();
    }
    let mut w = watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut applied = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitApply(_) => applied += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(applied, 3);
    assert_eq!(
        emu.counters().get("list", "configmaps"),
        0,
        "streaming lists do not LIST"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn metadata_only_list_and_watch() {
    let (emu, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("m", json!({"a": "b"})))
        .await
        .unwrap();
    let list = cms.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.labels.as_ref().unwrap()["a"], "b");
    let meta: Api<PartialObjectMeta<ConfigMap>> = Api::default_namespaced(client.clone());
    let mut w = watcher(meta, watcher::Config::default()).boxed();
    loop {
        if let watcher::Event::InitApply(o) = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            assert_eq!(o.metadata.name.as_deref(), Some("m"));
            break;
        }
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn faults_and_counters() {
    let (emu, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("f", json!({})))
        .await
        .unwrap();
    emu.reset_counters();
    emu.faults().fail_next(
        1,
        FaultMatch::verb_resource("patch", "configmaps"),
        FaultKind::Status(503),
    );
    let patch = Patch::Merge(json!({"data": {"z": "1"}}));
    assert_eq!(
        api_code(cms.patch("f", &PatchParams::default(), &patch).await.unwrap_err()),
        503
    );
    cms.patch("f", &PatchParams::default(), &patch).await.unwrap();
    let c = emu.counters();
    assert_eq!(c.get("patch", "configmaps"), 2);
    assert_eq!(c.status(503), 1);
    assert_eq!(c.by_user.get("anonymous").copied().unwrap_or(0), 2);
    // 429 with Retry-After.
    emu.faults().fail_next(
        1,
        FaultMatch::verb_resource("get", "configmaps"),
        FaultKind::TooManyRequests { retry_after_secs: 1 },
    );
    assert_eq!(api_code(cms.get("f").await.unwrap_err()), 429);
    // Dropped connection: a transport error, not an API error; the next request works.
    emu.faults().fail_next(
        1,
        FaultMatch::verb_resource("get", "configmaps"),
        FaultKind::DropConnection,
    );
    let e = cms.get("f").await.unwrap_err();
    assert!(
        !matches!(e, kube::Error::Api(_)),
        "expected a transport error, got {e:?}"
    );
    cms.get("f").await.unwrap();
    // With kube's default retry policy a 503 followed by success is transparent.
    let retrying = Client::try_from(Config::new(emu.url().parse().unwrap())).unwrap();
    let rcms: Api<ConfigMap> = Api::namespaced(retrying, "default");
    emu.reset_counters();
    emu.faults().fail_next(
        1,
        FaultMatch::verb_resource("patch", "configmaps"),
        FaultKind::Status(503),
    );
    rcms.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"r": "1"}})),
    )
    .await
    .unwrap();
    let c = emu.counters();
    assert_eq!(
        (c.get("patch", "configmaps"), c.status(503), c.status(200)),
        (2, 1, 1)
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn scale_subresource_and_server_side_apply() {
    let (emu, client) = start().await;
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {"replicas": 1,
        "selector": {"matchLabels": {"app": "d"}},
        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
    .unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    let s = deps.get_scale("d").await.unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(1));
    deps.patch_scale(
        "d",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    let d = deps.get("d").await.unwrap();
    assert_eq!(d.spec.replicas, Some(4));
    assert_eq!(d.metadata.generation, Some(2));

    // Secrets fold stringData into base64 data.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::default_namespaced(client.clone());
    let sec = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"p": "q"}})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(sec.data.unwrap()["p"].0, b"q".to_vec());
    assert_eq!(sec.type_.as_deref(), Some("Opaque"));

    // SSA: create, share, conflict, force.
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let applied =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "1"}});
    cms.patch("ssa", &PatchParams::apply("one"), &Patch::Apply(&applied))
        .await
        .unwrap();
    let two =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "2"}});
    let e = cms
        .patch("ssa", &PatchParams::apply("two"), &Patch::Apply(&two))
        .await
        .unwrap_err();
    assert_eq!(api_code(e), 409);
    let forced = cms
        .patch("ssa", &PatchParams::apply("two").force(), &Patch::Apply(&two))
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["k"], "2");
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"two".to_string()));
    emu.shutdown().await;
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // split under issue 19
async fn bad_requests_get_kube_status_codes() {
    let emu = Emulator::builder()
        .max_body_bytes(64 * 1024)
        .start()
        .await
        .unwrap();
    let client = client_for(&emu);
    let send = |method: &str, path: &str, ct: &str, body: Vec<u8>| {
        let client = client.clone();
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ct)
            .body(body)
            .unwrap();
        async move {
            match client.request_text(req).await {
                Ok(_) => 200,
                Err(kube::Error::Api(s)) => {
                    assert_eq!(s.status, Some(kube::core::response::StatusSummary::Failure));
                    s.code
                }
                Err(e) => panic!("transport error {e:?}"),
            }
        }
    };
    let cms = "/api/v1/namespaces/default/configmaps";
    assert_eq!(
        send("POST", cms, "application/json", b"{not json".to_vec()).await,
        400
    );
    assert_eq!(
        send("POST", cms, "application/json", b"[1,2]".to_vec()).await,
        400
    );
    assert_eq!(
        send("GET", "/apis/nope.dev/v1/things", "application/json", vec![]).await,
        404
    );
    assert_eq!(
        send(
            "GET",
            "/api/v1/namespaces/default/widgets",
            "application/json",
            vec![]
        )
        .await,
        404
    );
    let big = format!(
        "{{\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"k\":\"{}\"}}}}",
        "x".repeat(100 * 1024)
    );
    assert_eq!(send("POST", cms, "application/json", big.into_bytes()).await, 413);
    assert_eq!(
        send("POST", cms, "application/json", br#"{"metadata":{}}"#.to_vec()).await,
        422
    );
    assert_eq!(
        send(
            "POST",
            cms,
            "application/json",
            br#"{"metadata":{"name":"Bad_Name"}}"#.to_vec()
        )
        .await,
        422
    );
    assert_eq!(
        send(
            "POST",
            cms,
            "application/json",
            br#"{"metadata":{"name":"ok"}}"#.to_vec()
        )
        .await,
        200
    );
    assert_eq!(
        send("PATCH", &format!("{cms}/ok"), "text/plain", b"{}".to_vec()).await,
        415
    );
    assert_eq!(
        send(
            "PATCH",
            &format!("{cms}/ok"),
            "application/merge-patch+json",
            b"{oops".to_vec()
        )
        .await,
        400
    );
    assert_eq!(
        send(
            "PATCH",
            &format!("{cms}/missing"),
            "application/merge-patch+json",
            b"{}".to_vec()
        )
        .await,
        404
    );
    assert_eq!(
        send(
            "POST",
            cms,
            "application/json",
            br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"k"}}"#.to_vec()
        )
        .await,
        400
    );
    assert_eq!(
        send(
            "POST",
            cms,
            "application/json",
            br#"{"metadata":{"name":"n","namespace":"other"}}"#.to_vec()
        )
        .await,
        400
    );
    assert_eq!(
        send(
            "GET",
            &format!("{cms}?labelSelector=a%20in%20b"),
            "application/json",
            vec![]
        )
        .await,
        400
    );
    assert_eq!(
        send(
            "GET",
            &format!("{cms}?watch=1&resourceVersion=abc"),
            "application/json",
            vec![]
        )
        .await,
        400
    );
    assert_eq!(
        send(
            "DELETE",
            "/api/v1/namespaces/default/configmaps/ok?propagationPolicy=Nope",
            "application/json",
            vec![]
        )
        .await,
        400
    );
    // The server survived all of it.
    assert_eq!(send("GET", "/version", "application/json", vec![]).await, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn admission_hooks_can_mutate_and_deny() {
    struct Hook;
    impl kopf_testing::AdmissionHook for Hook {
        fn admit(
            &self,
            req: kopf_testing::AdmissionRequest,
        ) -> futures::future::BoxFuture<'_, kopf_testing::AdmissionDecision> {
            Box::pin(async move {
                match (&req.operation, &req.object) {
                    (kopf_testing::Operation::Create, Some(o)) if req.name == "denied" => {
                        let _ = o;
                        kopf_testing::AdmissionDecision::Deny {
                            code: 403,
                            message: "no".into(),
                        }
                    }
                    (kopf_testing::Operation::Create, Some(o)) => {
                        let mut o = o.clone();
                        o["metadata"]["labels"] = json!({"mutated": "yes"});
                        kopf_testing::AdmissionDecision::Mutate(o)
                    }
                    _ => kopf_testing::AdmissionDecision::Allow,
                }
            })
        }
    }
    let (emu, client) = start().await;
    emu.add_admission_hook(std::sync::Arc::new(Hook));
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let o = cms
        .create(&PostParams::default(), &cm("ok", json!({})))
        .await
        .unwrap();
    assert_eq!(o.metadata.labels.unwrap()["mutated"], "yes");
    assert_eq!(
        api_code(
            cms.create(&PostParams::default(), &cm("denied", json!({})))
                .await
                .unwrap_err()
        ),
        403
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn bytes_sent_are_counted_per_user_and_resource_as_they_stream() {
    let (emu, admin) = start().await;
    let as_user = |token: &str| {
        let mut cfg = Config::new(emu.url().parse().unwrap());
        cfg.default_namespace = "default".into();
        cfg.default_retry = false;
        cfg.auth_info.token = Some(token.to_owned().into());
        Client::try_from(cfg).unwrap()
    };
    let cms: Api<ConfigMap> = Api::default_namespaced(admin);
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("b{i}"), json!({"k": "v"})))
            .await
            .unwrap();
    }
    let lister: Api<ConfigMap> = Api::default_namespaced(as_user("lister"));
    let listed = lister.list(&ListParams::default()).await.unwrap();
    let list_bytes = serde_json::to_vec(&listed).unwrap().len() as u64;
    let counted = emu.counters().bytes("lister", "configmaps");
    // The response as sent, within what re-serialising it on this side may differ by.
    assert!(
        counted * 10 >= list_bytes * 9 && counted * 9 <= list_bytes * 10,
        "{counted} bytes counted for a {list_bytes}-byte list"
    );
    let watcher_api: Api<ConfigMap> = Api::default_namespaced(as_user("watcher"));
    let version = listed.metadata.resource_version.unwrap();
    let mut events = watcher_api
        .watch(&WatchParams::default(), &version)
        .await
        .unwrap()
        .boxed();
    assert_eq!(emu.counters().bytes("watcher", "configmaps"), 0);
    cms.create(&PostParams::default(), &cm("b3", json!({"k": "v"})))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(event, WatchEvent::Added(_)), "{event:?}");
    // Counted while the watch still streams, apart from the lister's.
    let streamed = emu.counters().bytes("watcher", "configmaps");
    assert!(streamed > 0);
    assert_eq!(
        emu.counters().bytes_of("watcher", "watch", "configmaps"),
        streamed
    );
    assert_eq!(emu.counters().bytes_of("lister", "list", "configmaps"), counted);
    assert_eq!(emu.counters().bytes("lister", "configmaps"), counted);
    emu.shutdown().await;
}
