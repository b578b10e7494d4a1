//! Watch streams: initial state, resumption from a resourceVersion via the bounded history
//! (410 Expired when too old), selectors with enter/leave transitions, bookmarks (periodic and
//! the `k8s.io/initial-events-end` one for streaming lists), timeouts and forced closes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use http::Response;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::api::{ListOpts, Shared, parse_rv};
use crate::error::ApiError;
use crate::http::{error_response, json_response};
use crate::render::{self, OutputMode};
use crate::resources::ResourceDef;
use crate::store::{Change, ChangeKind};

struct Filter {
    def: Arc<ResourceDef>,
    version: String,
    ns: Option<String>,
    opts: ListOpts,
    mode: OutputMode,
    first: bool,
    /// Where the objects sent are counted.
    shared: Arc<Shared>,
}

impl Filter {
    /// Is this the deletion of the CRD serving our resource (the watch must end, as in kube)?
    fn ends_watch(&self, ch: &Change) -> bool {
        self.def.custom
            && ch.kind == ChangeKind::Deleted
            && ch.gr.group == "apiextensions.k8s.io"
            && ch.gr.resource == "customresourcedefinitions"
            && ch.name == format!("{}.{}", self.def.plural, self.def.group)
    }

    fn event_type(&self, ch: &Change) -> Option<&'static str> {
        if ch.gr.group != self.def.group || ch.gr.resource != self.def.plural {
            return None;
        }
        if let Some(ns) = &self.ns
            && ch.namespace != *ns
        {
            return None;
        }
        if !self.opts.fields.is_empty() {
            let ok = if self.opts.fields.only_identity() {
                self.opts.fields.matches_identity(&ch.namespace, &ch.name)
            } else {
                serde_json::from_slice::<Value>(&ch.json).is_ok_and(|v| self.opts.fields.matches(&v))
            };
            if !ok {
                return None;
            }
        }
        let now = self.opts.labels.matches(&ch.labels);
        match ch.kind {
            ChangeKind::Added => now.then_some("ADDED"),
            ChangeKind::Deleted => now.then_some("DELETED"),
            ChangeKind::Modified => {
                let before = ch
                    .prev_labels
                    .as_ref()
                    .map(|l| self.opts.labels.matches(l))
                    .unwrap_or(now);
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }

    fn encode(&mut self, kind: &str, json: &Bytes) -> Bytes {
        self.shared.counters.objects_sent(&self.def.plural, 1);
        let obj = render::object(&self.def, &self.version, json, self.mode, self.first);
        self.first = false;
        frame(kind, &obj)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.def.kind, "apiVersion": self.def.api_version(&self.version), "metadata": meta});
        frame(
            "BOOKMARK",
            &Bytes::from(serde_json::to_vec(&obj).unwrap_or_default()),
        )
    }
}

fn frame(kind: &str, obj: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(obj.len() + 32);
    b.put_slice(b"{\"type\":\"");
    b.put_slice(kind.as_bytes());
    b.put_slice(b"\",\"object\":");
    b.put_slice(obj);
    b.put_slice(b"}\n");
    b.freeze()
}

fn error_frame(e: &ApiError) -> Bytes {
    frame("ERROR", &serde_json::to_vec(&e.to_status()).unwrap_or_default())
}

/// Start a watch; the response streams events until timeout, close or disconnect.
#[allow(clippy::too_many_lines)] // split under issue 19
pub(crate) fn watch(
    shared: Arc<Shared>,
    def: Arc<ResourceDef>,
    version: String,
    ns: Option<String>,
    opts: ListOpts,
    q: &HashMap<String, String>,
    mode: OutputMode,
) -> Response<Body> {
    let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
    let bookmarks = matches!(
        q.get("allowWatchBookmarks").map(|s| s.as_str()),
        Some("true" | "1")
    );
    let send_initial = q.get("sendInitialEvents").map(|s| s == "true" || s == "1");
    let timeout = match q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()) {
        Some(t) => Duration::from_secs(t),
        None => Duration::from_secs(1800 + rand::random_range(0..1800)),
    };
    // kube-apiserver 1.37 requires resourceVersionMatch=NotOlderThan with sendInitialEvents (true
    // or false), not bookmarks: without them the initial events just have no end marker.
    if send_initial.is_some() && q.get("resourceVersionMatch").map(|s| s.as_str()) != Some("NotOlderThan") {
        return error_response(&ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            &[(
                "FieldValueForbidden",
                "resourceVersionMatch",
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into(),
            )],
        ));
    }
    let from_rv = if rv_param.is_empty() || rv_param == "0" {
        None
    } else {
        match parse_rv(&rv_param) {
            Some(r) => Some(r),
            None => {
                return error_response(&ApiError::bad_request(format!(
                    "invalid resource version \"{rv_param}\": strconv.ParseUint: parsing \"{rv_param}\": invalid syntax"
                )));
            }
        }
    };
    let initial = from_rv.is_none() && send_initial != Some(false) || send_initial == Some(true);
    let gr = def.group_resource();

    // Snapshot, backlog and subscription under one lock: no gap, no overlap.
    let (rx, snapshot, backlog, snapshot_rv, expired) = {
        let mut st = shared.state.lock();
        let rx = shared.tx.subscribe();
        let current = st.rv;
        let coll = st.coll(&gr);
        let expired = from_rv.is_some_and(|r| r < coll.compacted_rv);
        let mut snapshot = vec![];
        if initial && !expired {
            let start = match &ns {
                Some(n) => std::ops::Bound::Included((n.clone(), String::new())),
                None => std::ops::Bound::Unbounded,
            };
            for ((ons, oname), s) in coll.objects.range((start, std::ops::Bound::Unbounded)) {
                if let Some(n) = &ns
                    && ons != n
                {
                    break;
                }
                snapshot.push((ons.clone(), oname.clone(), s.json.clone(), s.labels.clone(), s.rv));
            }
        }
        let backlog: Vec<Arc<Change>> = match from_rv {
            Some(r) if !expired && !initial => coll.history.iter().filter(|c| c.rv > r).cloned().collect(),
            _ => vec![],
        };
        let expired_at = coll.compacted_rv;
        (rx, snapshot, backlog, current, expired.then_some(expired_at))
    };

    let (tx, body_rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(256);
    let mut filter = Filter {
        def,
        version,
        ns,
        opts,
        mode,
        first: true,
        shared: shared.clone(),
    };
    let mut close_rx = shared.close_rx.clone();
    close_rx.mark_unchanged();
    let shutdown = shared.shutdown.clone();
    let published = shared.rv_published.clone();
    let interval = shared.cfg.bookmark_interval;
    tokio::spawn(async move {
        let mut rx = rx;
        if let Some(compacted) = expired {
            let e = ApiError::expired(format!(
                "too old resource version: {} ({})",
                from_rv.unwrap_or(0),
                compacted
            ));
            let _ = tx.send(Ok(error_frame(&e))).await;
            return;
        }
        let mut last = from_rv.unwrap_or(0);
        for (ons, oname, json, labels, _rv) in snapshot {
            if !filter.opts.labels.matches(&labels) {
                continue;
            }
            if !filter.opts.fields.is_empty() {
                let ok = if filter.opts.fields.only_identity() {
                    filter.opts.fields.matches_identity(&ons, &oname)
                } else {
                    serde_json::from_slice::<Value>(&json).is_ok_and(|v| filter.opts.fields.matches(&v))
                };
                if !ok {
                    continue;
                }
            }
            if tx.send(Ok(filter.encode("ADDED", &json))).await.is_err() {
                return;
            }
        }
        if initial {
            last = last.max(snapshot_rv);
        }
        if send_initial == Some(true)
            && bookmarks
            && tx.send(Ok(filter.bookmark(snapshot_rv, true))).await.is_err()
        {
            return;
        }
        for ch in backlog {
            if let Some(t) = filter.event_type(&ch) {
                if tx.send(Ok(filter.encode(t, &ch.json))).await.is_err() {
                    return;
                }
                last = last.max(ch.rv);
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = close_rx.changed() => break,
                _ = &mut deadline => break,
                _ = ticker.tick(), if bookmarks => {
                    // Everything up to `upto` is already in our receiver: drain, then bookmark.
                    let upto = published.load(Ordering::Acquire);
                    loop {
                        match rx.try_recv() {
                            Ok(ch) => {
                                if ch.rv <= last { continue; }
                                if let Some(t) = filter.event_type(&ch)
                                    && tx.send(Ok(filter.encode(t, &ch.json))).await.is_err()
                                {
                                    return;
                                }
                                last = last.max(ch.rv);
                            }
                            Err(broadcast::error::TryRecvError::Empty) => break,
                            Err(_) => return,
                        }
                    }
                    last = last.max(upto);
                    if tx.send(Ok(filter.bookmark(last, false))).await.is_err() {
                        return;
                    }
                }
                r = rx.recv() => match r {
                    Ok(ch) => {
                        if filter.ends_watch(&ch) { break; }
                        if ch.rv <= last { continue; }
                        if let Some(t) = filter.event_type(&ch)
                            && tx.send(Ok(filter.encode(t, &ch.json))).await.is_err()
                        {
                            return;
                        }
                        last = last.max(ch.rv);
                    }
                    // A watcher too slow to keep up is closed, like kube does; it resumes from `last`.
                    Err(_) => break,
                },
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(body_rx);
    let mut resp = json_response(200, Bytes::new());
    *resp.body_mut() = Body::from_stream(stream);
    resp
}
