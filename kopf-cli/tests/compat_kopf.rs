//! Golden-vector compatibility tests: every expectation here was produced by Python Kopf
//! itself (`tests/data/gen_vectors.py` → `tests/data/kopf_vectors.json`).

use std::sync::LazyLock;

use kopf_abi::protocol::{Filters, HandlerKind, ResourceSelector};
use kopf_cli::intents::causes::{self, CauseInputs, ChangingCause, Reason};
use kopf_cli::intents::filters::{self, FilterMatch, FilterSubject};
use kopf_cli::persistence::conventions::{self, KeyConvention};
use kopf_cli::persistence::diffbase::{DiffBaseStorage, encode_essence};
use kopf_cli::persistence::progress::{HandlerState, State};
use kopf_cli::persistence::progress_storage::ProgressStorage;
use kopf_cli::persistence::times::Timestamp;
use kopf_cli::structs::bodies::Body;
use kopf_cli::structs::dicts::parse_field;
use kopf_cli::structs::diffs::{self, DiffItem};
use kopf_cli::structs::patches::{Patch, PatchFn};
use kopf_cli::structs::pyjson::{py_eq, py_truthy, to_python_json};
use kopf_cli::structs::references::{self, NamespacePattern, Resource};
use serde_json::Value;

static VECTORS: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(include_str!("data/kopf_vectors.json")).unwrap());

fn cases(section: &str) -> &'static Vec<Value> {
    VECTORS[section]
        .as_array()
        .unwrap_or_else(|| panic!("no section {section}"))
}

fn sub_cases(section: &str, sub: &str) -> &'static Vec<Value> {
    VECTORS[section][sub]
        .as_array()
        .unwrap_or_else(|| panic!("no section {section}.{sub}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn opt_s(v: &Value) -> Option<&str> {
    v.as_str()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

/// Whether serde_json keeps insertion order here (its `preserve_order` feature).
fn preserves_order() -> bool {
    let v: Value = serde_json::from_str(r#"{"b":1,"a":2}"#).unwrap();
    serde_json::to_string(&v).unwrap().starts_with(r#"{"b""#)
}

fn assert_py_eq(actual: &Value, expected: &Value, context: &dyn std::fmt::Debug) {
    assert!(
        py_eq(actual, expected),
        "mismatch for {context:?}:\n  actual:   {actual}\n  expected: {expected}"
    );
}

fn storage_by_name(name: &str) -> ProgressStorage {
    match name {
        "smart" => ProgressStorage::default(),
        "custom" => ProgressStorage::new("my-op.example.com", true).unwrap(),
        "nov1" => ProgressStorage::new("kopf.zalando.org", false).unwrap(),
        other => panic!("unknown storage {other}"),
    }
}

fn now() -> Timestamp {
    Timestamp::parse("2030-01-01T00:00:00+00:00").unwrap()
}

#[test]
fn annotation_keys() {
    let all = cases("keys");
    assert!(all.len() > 100);
    for c in all {
        let conv = KeyConvention::new(s(&c["prefix"]), true).unwrap();
        let nov1 = KeyConvention::new(s(&c["prefix"]), false).unwrap();
        let key = s(&c["key"]);
        assert_eq!(conventions::make_safe_key(key), s(&c["safe"]), "{c}");
        assert_eq!(conventions::make_suffix(key), s(&c["suffix"]), "{c}");
        assert_eq!(conv.make_v1_key(key), s(&c["v1"]), "{c}");
        assert_eq!(conv.make_v2_key(key), s(&c["v2"]), "{c}");
        assert_eq!(conv.make_keys(key, None).to_vec(), strings(&c["keys"]), "{c}");
        assert_eq!(
            nov1.make_keys(key, None).to_vec(),
            strings(&c["keys_no_v1"]),
            "{c}"
        );
    }
}

#[test]
fn annotation_keys_marked_for_replicasets() {
    let conv = KeyConvention::new("kopf.zalando.org", true).unwrap();
    for c in cases("marked_keys") {
        assert_eq!(
            conv.make_keys(s(&c["key"]), Some(&c["body"])).to_vec(),
            strings(&c["keys"]),
            "{c}"
        );
    }
}

#[test]
fn kopf_managed_prefixes() {
    for c in cases("marked_prefixes") {
        let keys = strings(&c["keys"]);
        let found: Vec<&str> = conventions::detect_marked_prefixes(keys.iter().map(String::as_str))
            .into_iter()
            .collect();
        assert_eq!(found, strings(&c["prefixes"]), "{c}");
    }
}

#[test]
fn python_json_text() {
    let field = if preserves_order() { "text" } else { "text_sorted" };
    for c in cases("json_text") {
        assert_eq!(to_python_json(&c["value"]), s(&c[field]), "{c}");
    }
}

#[test]
fn timestamps() {
    for c in cases("timestamps") {
        let parsed = Timestamp::parse(s(&c["text"]));
        match c.get("iso") {
            Some(iso) => {
                let t = parsed.unwrap_or_else(|e| panic!("{c}: {e}"));
                assert_eq!(t.to_string(), s(iso), "{c}");
                assert_eq!(t.is_naive(), c["naive"].as_bool().unwrap(), "{c}");
            }
            None => assert!(parsed.is_err(), "{c} should fail, got {parsed:?}"),
        }
    }
}

#[test]
fn progress_records() {
    for c in cases("records") {
        let record = c["record"].as_object().unwrap();
        let state = HandlerState::from_record(record, now(), "h").unwrap();
        let exp = &c["state"];
        if let Some(started) = opt_s(&exp["started"]) {
            assert_eq!(state.started.to_string(), started, "{c}");
        } else {
            assert_eq!(state.started, now(), "{c}");
        }
        let fmt = |t: &Option<Timestamp>| t.map(|t| t.to_string());
        assert_eq!(fmt(&state.stopped).as_deref(), opt_s(&exp["stopped"]), "{c}");
        assert_eq!(fmt(&state.delayed).as_deref(), opt_s(&exp["delayed"]), "{c}");
        assert_eq!(state.purpose.as_deref(), opt_s(&exp["purpose"]), "{c}");
        assert_eq!(state.retries as f64, exp["retries"].as_f64().unwrap(), "{c}");
        // Kopf keeps the raw stored values in memory (`1`, `"yes"`) and coerces them on writing.
        assert_eq!(state.success, py_truthy(&exp["success"]), "{c}");
        assert_eq!(state.failure, py_truthy(&exp["failure"]), "{c}");
        assert_eq!(state.message.as_deref(), opt_s(&exp["message"]), "{c}");
        assert_eq!(state.subrefs, strings(&exp["subrefs"]), "{c}");
        assert_eq!(state.finished(), exp["finished"].as_bool().unwrap(), "{c}");
        if c["changed"].is_boolean() {
            assert_eq!(state.is_changed(), c["changed"].as_bool().unwrap(), "{c}");
            assert_eq!(state.to_json_text(false), s(&c["text"]), "{c}");
            assert_eq!(state.to_json_text(true), s(&c["text_verbose"]), "{c}");
            assert_py_eq(&Value::Object(state.as_in_storage()), &c["as_in_storage"], c);
        }
    }
}

#[test]
fn progress_fetch() {
    let all = sub_cases("progress_storage", "fetch");
    assert!(all.len() > 50);
    for c in all {
        let storage = storage_by_name(s(&c["storage"]));
        let fetched = storage.fetch(s(&c["key"]), &c["body"]).unwrap();
        assert_eq!(
            fetched.map(Value::Object).unwrap_or(Value::Null),
            c["record"],
            "{c}"
        );
    }
}

#[test]
fn progress_store() {
    for c in sub_cases("progress_storage", "store") {
        let storage = storage_by_name(s(&c["storage"]));
        let record = c["record"].as_object().unwrap();
        let state = HandlerState::from_record(record, now(), "h").unwrap();
        let mut patch = Patch::new();
        storage.store(s(&c["key"]), &state, &c["body"], &mut patch);
        assert_eq!(patch.merge_value(), c["patch"], "{c}");
    }
}

#[test]
fn progress_purge() {
    for c in sub_cases("progress_storage", "purge") {
        let storage = storage_by_name(s(&c["storage"]));
        let mut patch = Patch::from_merge(c["patch_before"].clone());
        storage.purge(s(&c["key"]), &c["body"], &mut patch);
        assert_eq!(patch.merge_value(), c["patch"], "{c}");
    }
}

#[test]
fn progress_touch() {
    for c in sub_cases("progress_storage", "touch") {
        let storage = storage_by_name(s(&c["storage"]));
        let mut patch = Patch::new();
        storage.touch(&c["body"], &mut patch, opt_s(&c["value"]));
        assert_eq!(patch.merge_value(), c["patch"], "{c}");
    }
}

#[test]
fn progress_clear() {
    for c in sub_cases("progress_storage", "clear") {
        let storage = storage_by_name(s(&c["storage"]));
        let mut essence = c["essence"].clone();
        storage.clear(&mut essence);
        assert_eq!(essence, c["cleared"], "{c}");
    }
}

#[test]
fn essences() {
    let text_field = if preserves_order() { "text" } else { "text_sorted" };
    let mut checked = 0;
    for c in cases("essences") {
        if c.get("error").is_some() {
            continue; // Kopf crashes there (TypeError); we skip such extra fields instead.
        }
        let prefix = opt_s(&c["prefix"]).unwrap_or("kopf.zalando.org");
        let ignored: Vec<Vec<String>> = strings(&c["ignored_fields"])
            .iter()
            .map(|f| parse_field(f))
            .collect();
        let extra: Vec<Vec<String>> = strings(&c["extra_fields"])
            .iter()
            .map(|f| parse_field(f))
            .collect();
        let dstorage = DiffBaseStorage::new(prefix, "last-handled-configuration", true, ignored).unwrap();
        let pstorage = ProgressStorage::new(prefix, true).unwrap();
        let built = dstorage.build(&c["body"], &extra);
        assert_eq!(built, c["built"], "built: {c}");
        let essence = dstorage.essence(&pstorage, &c["body"], &extra);
        assert_eq!(essence, c["essence"], "essence: {c}");
        assert_eq!(encode_essence(&essence), s(&c[text_field]), "{c}");
        let mut patch = Patch::new();
        dstorage.store(&c["body"], &mut patch, &essence);
        // The stored text depends on key order; compare the decoded annotations instead.
        let decode = |p: &Value| -> Value {
            let mut p = p.clone();
            if let Some(ann) = p
                .pointer_mut("/metadata/annotations")
                .and_then(Value::as_object_mut)
            {
                for (k, v) in ann.iter_mut() {
                    if k.ends_with("last-handled-configuration") || k.contains("last-handled-configurat") {
                        *v = serde_json::from_str(v.as_str().unwrap()).unwrap();
                    }
                }
            }
            p
        };
        assert_eq!(
            decode(&patch.merge_value()),
            decode(&c["store_patch"]),
            "store: {c}"
        );
        let fetched = dstorage.fetch(&c["body"]).unwrap().unwrap_or(Value::Null);
        assert_eq!(fetched, c["fetched"], "fetch: {c}");
        checked += 1;
    }
    assert!(checked > 30);
}

fn sorted_items(items: &[Value]) -> Vec<Value> {
    let mut v = items.to_vec();
    v.sort_by_key(|i| format!("{}{}", i[0], i[1]));
    v
}

fn assert_same_diff(actual: &[DiffItem], expected: &Value, context: &dyn std::fmt::Debug) {
    let actual: Vec<Value> = actual.iter().map(DiffItem::to_json).collect();
    let expected = expected.as_array().unwrap();
    assert_eq!(
        actual.len(),
        expected.len(),
        "{context:?}: {actual:?} vs {expected:?}"
    );
    for (a, e) in sorted_items(&actual).iter().zip(sorted_items(expected).iter()) {
        assert_py_eq(a, e, context);
    }
}

#[test]
fn diffs_and_reductions() {
    for c in cases("diffs") {
        let a = Some(&c["a"]).filter(|v| !v.is_null());
        let b = Some(&c["b"]).filter(|v| !v.is_null());
        let d = diffs::diff(a, b);
        assert_same_diff(&d, &c["diff"], c);
        assert_eq!(diffs::differs(a, b), !d.is_empty(), "{c}");
        for r in c["reduced"].as_array().unwrap() {
            let path = strings(&r["path"]);
            assert_same_diff(&diffs::reduce(&d, &path), &r["diff"], &(c, r));
        }
    }
}

#[test]
fn cause_detection() {
    let all = cases("causes");
    assert!(all.len() >= 100);
    for c in all {
        let old = Some(&c["old"]).filter(|v| !v.is_null());
        let new = Some(&c["new"]).filter(|v| !v.is_null());
        let d = diffs::diff(old, new);
        let cause = causes::detect_changing_cause(&CauseInputs {
            event_type: opt_s(&c["event_type"]),
            body: &c["body"],
            finalizer: s(&c["finalizer"]),
            old,
            new,
            diff: &d,
            initial: c["initial"].as_bool().unwrap(),
        });
        assert_eq!(cause.reason.as_str(), s(&c["reason"]), "{c}");
        assert_eq!(cause.initial, c["cause_initial"].as_bool().unwrap(), "{c}");
        assert_eq!(cause.deleted, c["deleted"].as_bool().unwrap(), "{c}");
    }
}

fn kind_of(name: &str) -> HandlerKind {
    *HandlerKind::ALL.iter().find(|k| k.as_str() == name).unwrap()
}

#[test]
fn changing_handler_selection() {
    let handlers = sub_cases("handler_selection", "handlers");
    for c in sub_cases("handler_selection", "cases") {
        let old = Some(&c["old"]).filter(|v| !v.is_null());
        let new = Some(&c["new"]).filter(|v| !v.is_null());
        let cause = ChangingCause {
            reason: Reason::parse(s(&c["reason"])).unwrap(),
            initial: c["initial"].as_bool().unwrap(),
            deleted: Body::new(&c["body"]).is_deleting(),
        };
        let subject = FilterSubject {
            body: &c["body"],
            essences: Some((old, new)),
        };
        let mut selected = Vec::new();
        let mut requires = false;
        for h in handlers {
            let kind = kind_of(s(&h["kind"]));
            let f = Filters {
                field: opt_s(&h["field"]).map(str::to_owned),
                ..Default::default()
            };
            if causes::changing_handler_applies(kind, h["deleted"].as_bool(), &cause)
                && filters::matches(&f, &subject, causes::field_needs_change(kind)) == FilterMatch::Match
            {
                selected.push(s(&h["id"]).to_owned());
            }
            assert_eq!(
                causes::requires_finalizer(kind, h["optional"].as_bool()),
                h["requires_finalizer"].as_bool().unwrap(),
                "{h}"
            );
            if causes::requires_finalizer(kind, h["optional"].as_bool())
                && filters::prematch(&f, &subject) == FilterMatch::Match
            {
                requires = true;
            }
        }
        assert_eq!(selected, strings(&c["selected"]), "{c}");
        assert_eq!(requires, c["requires_finalizer"].as_bool().unwrap(), "{c}");
    }
}

#[test]
fn filter_matching() {
    let all = cases("filters");
    assert!(all.len() > 1000);
    for c in all {
        let kind = kind_of(s(&c["kind"]));
        let f: Filters = serde_json::from_value(c["filters"].clone()).unwrap();
        let changing = c["changing"].as_bool().unwrap();
        let old = Some(&c["old"]).filter(|v| !v.is_null());
        let new = Some(&c["new"]).filter(|v| !v.is_null());
        let subject = FilterSubject {
            body: &c["body"],
            essences: changing.then_some((old, new)),
        };
        let m = filters::matches(&f, &subject, causes::field_needs_change(kind));
        let p = filters::prematch(&f, &subject);
        assert_eq!(
            m == FilterMatch::Match,
            c["match"].as_bool().unwrap(),
            "match: {c}"
        );
        assert_eq!(
            p == FilterMatch::Match,
            c["prematch"].as_bool().unwrap(),
            "prematch: {c}"
        );
    }
}

fn resource_of(v: &Value) -> Resource {
    let set = |k: &str| strings(&v[k]).into_iter().collect();
    Resource {
        group: s(&v["group"]).into(),
        version: s(&v["version"]).into(),
        plural: s(&v["plural"]).into(),
        kind: s(&v["kind"]).into(),
        singular: s(&v["singular"]).into(),
        shortcuts: set("shortcuts"),
        categories: set("categories"),
        subresources: set("subresources"),
        namespaced: v["namespaced"].as_bool().unwrap(),
        preferred: v["preferred"].as_bool().unwrap(),
        verbs: set("verbs"),
    }
}

#[test]
fn resource_selectors() {
    let resources: Vec<Resource> = sub_cases("selectors", "resources")
        .iter()
        .map(resource_of)
        .collect();
    let name = |r: &Resource| format!("{}/{}/{}", r.group, r.version, r.plural);
    for c in sub_cases("selectors", "cases") {
        let sel: ResourceSelector = serde_json::from_value(c["selector"].clone()).unwrap();
        assert_eq!(
            references::is_specific(&sel),
            c["is_specific"].as_bool().unwrap(),
            "{c}"
        );
        let mut checks: Vec<String> = resources
            .iter()
            .filter(|r| references::check(&sel, r))
            .map(name)
            .collect();
        checks.sort();
        assert_eq!(checks, strings(&c["checks"]), "{c}");
        let mut selected: Vec<String> = references::select(&sel, &resources)
            .into_iter()
            .map(name)
            .collect();
        selected.sort();
        assert_eq!(selected, strings(&c["selected"]), "{c}");
        assert_eq!(
            references::resolve(&sel, &resources).is_err(),
            c["ambiguous"].as_bool().unwrap(),
            "{c}"
        );
    }
}

#[test]
fn namespace_patterns() {
    for c in sub_cases("namespaces", "cases") {
        let p = NamespacePattern::new(s(&c["pattern"]));
        assert_eq!(p.matches(s(&c["name"])), c["match"].as_bool().unwrap(), "{c}");
    }
    let mut specific: Vec<String> = sub_cases("namespaces", "patterns")
        .iter()
        .filter_map(|p| NamespacePattern::new(s(p)).specific_name().map(str::to_owned))
        .collect();
    specific.sort();
    specific.dedup();
    assert_eq!(specific, strings(&VECTORS["namespaces"]["specific"]));
}

#[test]
fn finalizer_json_patches() {
    for c in cases("finalizers") {
        let fin = s(&c["finalizer"]).to_owned();
        let mut patch = Patch::new();
        patch.push_fn(if s(&c["op"]) == "add" {
            PatchFn::AddFinalizer(fin.clone())
        } else {
            PatchFn::RemoveFinalizer(fin.clone())
        });
        assert_eq!(Value::Array(patch.json_ops(&c["body"])), c["ops"], "{c}");
        assert_eq!(
            Body::new(&c["body"]).has_finalizer(&fin),
            c["blocked"].as_bool().unwrap(),
            "{c}"
        );
        // The JSON-patch request leads with the resourceVersion test (when there are ops).
        let (body_ops, status_ops) = patch.json_requests(&c["body"], true, Vec::new());
        assert!(status_ops.is_none());
        match body_ops {
            None => assert!(c["ops"].as_array().unwrap().is_empty()),
            Some(ops) => assert_eq!(ops[0]["value"], "42"),
        }
    }
}

#[test]
fn results_delivery() {
    for c in cases("deliver_results") {
        let mut patch = Patch::from_merge(c["patch_before"].clone());
        for (id, result) in c["results"].as_object().unwrap() {
            patch.deliver_result(id, result);
        }
        assert_eq!(patch.merge_value(), c["patch"], "{c}");
    }
}

#[test]
fn progress_lifecycles() {
    use kopf_cli::persistence::progress::StepOutcome;
    let all = cases("lifecycles");
    assert!(all.len() >= 5);
    let storage = ProgressStorage::default();
    for scenario in all {
        let base = Timestamp::parse(s(&scenario["basetime"])).unwrap();
        let owned = strings(&scenario["owned"]);
        for step in scenario["steps"].as_array().unwrap() {
            let ctx = (s(&scenario["name"]), step);
            let body = &step["body"];
            let now = base.plus_seconds(step["t"].as_f64().unwrap());
            let reason = s(&step["reason"]);
            let selected = strings(&step["selected"]);
            let sel = || selected.iter().map(String::as_str);
            let (state, unreadable) =
                State::from_storage(&storage, body, owned.iter().map(String::as_str), now);
            assert!(unreadable.is_empty(), "{ctx:?}: {unreadable:?}");
            let mut state = state.with_purpose(Some(reason), []).with_handlers(sel(), now);
            let extras = state.extras();
            let extras_json: serde_json::Map<String, Value> = extras
                .iter()
                .map(|(p, c)| {
                    (
                        p.clone(),
                        serde_json::json!({"success": c.success, "failure": c.failure, "running": c.running}),
                    )
                })
                .collect();
            assert_eq!(Value::Object(extras_json), step["extras"], "extras: {ctx:?}");
            if !extras.is_empty() {
                state = state.with_purpose(Some(reason), sel());
            }
            let mut patch = Patch::new();
            if !state.extras().is_empty() {
                state.purge(&storage, body, &mut patch, owned.iter().map(String::as_str));
            }
            let outcomes: Vec<(String, StepOutcome)> = step["outcomes"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(id, o)| {
                    let outcome = StepOutcome {
                        final_: o["final"].as_bool().unwrap(),
                        delay: o.get("delay").and_then(Value::as_f64),
                        error: o.get("error").and_then(Value::as_str).map(str::to_owned),
                        subrefs: o.get("subrefs").map(strings).unwrap_or_default(),
                    };
                    (id.clone(), outcome)
                })
                .collect();
            state = state.with_outcomes(outcomes.iter().map(|(id, o)| (id.as_str(), o)), now);
            state.store(&storage, body, &mut patch);
            let done = state.done();
            if done {
                state.purge(&storage, body, &mut patch, owned.iter().map(String::as_str));
            }
            assert_eq!(patch.merge_value(), step["patch"], "patch: {ctx:?}");
            assert_eq!(done, step["done"].as_bool().unwrap(), "done: {ctx:?}");
            let mut delays = state.delays(&now);
            delays.sort_by(f64::total_cmp);
            let mut expected: Vec<f64> = step["delays"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_f64().unwrap())
                .collect();
            expected.sort_by(f64::total_cmp);
            assert_eq!(delays.len(), expected.len(), "delays: {ctx:?}");
            for (a, e) in delays.iter().zip(&expected) {
                assert!((a - e).abs() < 1e-6, "delays: {ctx:?}");
            }
            let counts = state.counts();
            assert_eq!(
                serde_json::json!({"success": counts.success, "failure": counts.failure, "running": counts.running}),
                step["counts"],
                "counts: {ctx:?}"
            );
        }
    }
}

#[test]
fn patch_inconsistencies() {
    for c in cases("inconsistencies") {
        let patch = Patch::from_merge(c["patch"].clone());
        assert_same_diff(&patch.inconsistencies(&c["body"]), &c["inconsistencies"], c);
    }
}

#[test]
fn selector_positional_forms() {
    let mut checked = 0;
    for c in sub_cases("selectors", "cases") {
        if !c["kwargs"].as_object().unwrap().is_empty() {
            continue;
        }
        let args = strings(&c["args"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let sel = references::parse_selector_args(&args).unwrap();
        let expected: ResourceSelector = serde_json::from_value(c["selector"].clone()).unwrap();
        assert_eq!(sel, expected, "{c}");
        checked += 1;
    }
    assert!(checked > 15);
}

/// Corrupted objects (as edited by hand) must give errors or be ignored, never panic.
#[test]
fn garbage_never_panics() {
    let bodies = [
        serde_json::json!(null),
        serde_json::json!("string"),
        serde_json::json!([1, 2]),
        serde_json::json!({"metadata": "str", "status": 5, "spec": null}),
        serde_json::json!({"metadata": {"annotations": ["a"], "labels": "x", "finalizers": null}}),
        serde_json::json!({"metadata": {"annotations": {"kopf.zalando.org/h": "{not json",
            "kopf.zalando.org/last-handled-configuration": 42}, "finalizers": "f"},
            "status": {"kopf": {"progress": {"h": "str"}}}}),
        serde_json::json!({"metadata": {"annotations": {"kopf.zalando.org/h": "[1]"},
            "deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"kopf": "x"}}),
        serde_json::json!({"metadata": {"annotations": {"kopf.zalando.org/h": "{\"started\": 5}"}}}),
        serde_json::json!({"metadata": {"annotations": {"kopf.zalando.org/h": "{\"started\": \"yesterday\"}"}}}),
    ];
    let progress = ProgressStorage::default();
    let diffbase = DiffBaseStorage::default();
    let extra = vec![
        parse_field("spec.a.b"),
        parse_field("metadata.name"),
        parse_field("status.x"),
    ];
    let all_filters: Filters = serde_json::from_value(serde_json::json!({
        "labels": {"a": "present"}, "annotations": {"b": "absent"},
        "field": "spec.a.b", "value": {"equals": 1}, "old": "present", "new": "absent"}))
    .unwrap();
    for body in &bodies {
        let _ = progress.fetch("h", body);
        let _ = diffbase.fetch(body);
        let essence = diffbase.essence(&progress, body, &extra);
        let mut patch = Patch::from_merge(serde_json::json!({"metadata": "garbage", "status": 1}));
        progress.purge("h", body, &mut patch);
        progress.touch(body, &mut patch, None);
        diffbase.store(body, &mut patch, &essence);
        let _ = State::from_storage(&progress, body, ["h", "g"], now());
        patch.push_fn(PatchFn::AddFinalizer("f".into()));
        patch.push_fn(PatchFn::RemoveFinalizer("f".into()));
        let _ = patch.json_requests(body, true, Vec::new());
        let _ = patch.inconsistencies(body);
        let mut copy = body.clone();
        let _ = patch.apply_to(&mut copy);
        let d = diffs::diff(Some(body), Some(&essence));
        let _ = diffs::reduce(&d, &["spec", "a"]);
        let cause = causes::detect_changing_cause(&CauseInputs {
            event_type: None,
            body,
            finalizer: "f",
            old: Some(body),
            new: Some(&essence),
            diff: &d,
            initial: true,
        });
        let subject = FilterSubject {
            body,
            essences: Some((Some(body), Some(&essence))),
        };
        let _ = filters::matches(&all_filters, &subject, true);
        let _ = causes::changing_handler_applies(HandlerKind::Resume, None, &cause);
    }
}
