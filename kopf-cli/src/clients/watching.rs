//! Continuous list+watch of one resource in one namespace (or cluster-wide).
//!
//! Kopf's semantics (`kopf/_cogs/clients/watching.py`): list first and yield each object
//! as a pseudo-event of type `None`, then watch from the listing's resourceVersion with
//! bookmarks; `410 Gone` means re-list; a silent stream is reconnected after an
//! inactivity timeout. Differences: the listing is paginated (bounded memory on large
//! clusters), list boundaries are reported so that the consumer can treat objects
//! that vanished during a re-list as deleted, and consecutive re-lists back off (as
//! client-go's reflector: from 800 ms doubling to 30 s, with jitter), so that a server
//! answering every watch with 410 Gone is not flooded with full listings.

use std::time::Duration;

use futures::StreamExt;
use kube::{
    Client,
    api::{ListParams, WatchEvent, WatchParams},
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ApiError, urls::ResourcePath};
use crate::structs::backoff::{Backoff, Delays};
use crate::structs::selectors::LabelSelector;

/// The raw event type, as in the watch protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The object was created (or first seen by this watch).
    Added,
    /// The object was changed.
    Modified,
    /// The object was deleted; the body is its last state.
    Deleted,
}

impl EventType {
    /// The name as in the watch protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One item of a continuous watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchItem {
    /// A (re-)listing begins: objects not listed before [`WatchItem::ListDone`] are gone.
    ListStarted,
    /// An object from the listing (Kopf's raw event type `None`).
    Listed(Value),
    /// The listing is complete; watch events follow.
    ListDone,
    /// A watch event.
    Event(EventType, Value),
}

/// Settings of a continuous watch (Kopf's `settings.watching` and `networking`).
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// `timeoutSeconds` for the server; `None` lets the server decide.
    pub server_timeout: Option<u32>,
    /// Reconnect when nothing (not even a bookmark) arrives for this long.
    pub inactivity_timeout: Duration,
    /// Pause between consecutive watch requests.
    pub reconnect_backoff: Duration,
    /// Pauses after consecutive errors; the last one repeats.
    pub error_backoffs: Vec<Duration>,
    /// Objects per page of the listing.
    pub page_size: u32,
    /// A label selector applied server-side, if any. An object that stops matching it
    /// arrives as `MODIFIED` (the server says `DELETED`, but the object lives on): the
    /// consumer sees its new labels and can let go of it (its finalizer, its daemons).
    pub label_selector: Option<LabelSelector>,
    /// A field selector applied server-side, if any (`metadata.name=NAME` watches one
    /// object, and needs RBAC for that name only).
    pub field_selector: Option<String>,
    /// End each watch request after this long and reconnect from the last position
    /// (Kopf's `settings.watching.client_timeout`); `None`: no client-side limit.
    pub client_timeout: Option<Duration>,
    /// Wait for the server's `Retry-After` even when it is shorter than the backoff
    /// (Kopf's `settings.networking.enforce_retry_after`).
    pub enforce_retry_after: bool,
    /// KEP-5866's `shardSelector` (`--sharding`: this replica's share), if any. A server
    /// without the feature ignores it (the multiplexer's gate filters then); one that
    /// refuses it gets the request again without it.
    pub shard_selector: Option<String>,
    /// The operator's metrics (watch restarts).
    pub metrics: crate::observability::metrics::Metrics,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            server_timeout: None,
            inactivity_timeout: Duration::from_secs(70),
            reconnect_backoff: Duration::from_millis(100),
            error_backoffs: [1, 1, 2, 3, 5, 8, 13, 21]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            page_size: 500,
            label_selector: None,
            field_selector: None,
            client_timeout: None,
            enforce_retry_after: false,
            shard_selector: None,
            metrics: crate::observability::metrics::Metrics::default(),
        }
    }
}

/// The first pause before a re-list that follows another re-list without any watch
/// progress in between (client-go's reflector backoff).
pub const RELIST_BACKOFF_INITIAL: Duration = Duration::from_millis(800);
/// The longest such pause (before jitter).
pub const RELIST_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The random fraction added to each re-list pause: replicas and resources do not
/// re-list in lockstep.
pub const RELIST_BACKOFF_JITTER: f64 = 0.2;

/// Why a watch loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// The stop token was cancelled (pause or exit).
    Stopped,
    /// The consumer dropped its receiver.
    ConsumerGone,
}

/// Lists and watches `path` in `namespace` (or cluster-wide) until `stop` is cancelled
/// or `sink` is closed, sending every item to `sink`. Never returns an error: failures
/// are logged and retried with backoff, and `410 Gone` leads to a re-list.
pub async fn watch_continuously(
    client: Client,
    path: ResourcePath,
    namespace: Option<String>,
    mut settings: WatchSettings,
    sink: mpsc::Sender<WatchItem>,
    stop: CancellationToken,
) -> WatchEnd {
    let url = path.collection(namespace.as_deref());
    let mut backoff = Backoff::new(Delays::Steps(settings.error_backoffs.clone()));
    // Separate from the error backoff: a successful listing must not reset it, or a
    // server that expires every watch at once gets a listing per round trip.
    let mut relists =
        Backoff::exponential(RELIST_BACKOFF_INITIAL, RELIST_BACKOFF_MAX).with_jitter(RELIST_BACKOFF_JITTER);
    // Whether a watch delivered anything since the last listing: a 410 after a healthy
    // watch (a compaction) re-lists at once; one right after a listing backs off.
    let mut progressed = true;
    let mut resource_version: Option<String> = None;
    loop {
        let listing = resource_version.is_none();
        let step = async {
            match resource_version.take() {
                None => list_all(&client, &url, &settings, &sink).await.map(Some),
                Some(rv) => watch_once(&client, &url, &settings, rv, &sink, &mut progressed).await,
            }
        };
        let outcome = tokio::select! {
            _ = stop.cancelled() => return WatchEnd::Stopped,
            outcome = step => outcome,
        };
        let pause = match outcome {
            Ok(Some(rv)) => {
                backoff.reset();
                resource_version = Some(rv);
                // Kopf pauses between watch requests, not between a listing and the
                // watch that continues it: events after the listing wait for the watch.
                if listing {
                    Duration::ZERO
                } else {
                    settings.reconnect_backoff
                }
            }
            Ok(None) => {
                // 410 Gone or a lost position: re-list from scratch.
                settings.metrics.watch_restarted(&path.plural);
                backoff.reset();
                if std::mem::replace(&mut progressed, false) {
                    relists.reset();
                    Duration::ZERO
                } else {
                    let delay = relists.next_backoff();
                    tracing::debug!(%url, "re-listing again without watch progress; waiting {delay:?}");
                    delay
                }
            }
            Err(StepError::ConsumerGone) => return WatchEnd::ConsumerGone,
            Err(StepError::Api { error, .. })
                if settings.shard_selector.is_some() && refuses_shard_selector(&error) =>
            {
                tracing::warn!(%url, "the API server refused the shard selector ({error}); filtering client-side");
                settings.shard_selector = None;
                Duration::ZERO
            }
            Err(StepError::Api { error, resume }) => {
                let delay = error.retry_delay(backoff.next_backoff(), settings.enforce_retry_after);
                if error.is_permission() {
                    tracing::error!(%url, "no permission to list/watch ({error}); retrying in {delay:?}");
                } else {
                    tracing::warn!(%url, "watching failed ({error}); retrying in {delay:?}");
                }
                resource_version = resume;
                delay
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = stop.cancelled() => return WatchEnd::Stopped,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[derive(Debug)]
enum StepError {
    ConsumerGone,
    /// An API failure; `resume` is the position to resume watching from (if still valid).
    Api {
        error: ApiError,
        resume: Option<String>,
    },
}

async fn send(sink: &mpsc::Sender<WatchItem>, item: WatchItem) -> Result<(), StepError> {
    sink.send(item).await.map_err(|_| StepError::ConsumerGone)
}

/// Lists every object page by page; returns the listing's resourceVersion.
async fn list_all(
    client: &Client,
    url: &str,
    settings: &WatchSettings,
    sink: &mpsc::Sender<WatchItem>,
) -> Result<String, StepError> {
    let api_err = |error: ApiError| StepError::Api { error, resume: None };
    send(sink, WatchItem::ListStarted).await?;
    let mut continue_token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(settings.page_size);
        if let Some(selector) = &settings.label_selector {
            params = params.labels(&selector.to_string());
        }
        if let Some(selector) = &settings.field_selector {
            params = params.fields(selector);
        }
        if let Some(token) = &continue_token {
            params = params.continue_token(token);
        }
        let request = kube::core::Request::new(url)
            .list(&params)
            .map(|r| sharded(r, settings))
            .map_err(|e| api_err(ApiError::Request(e.to_string())))?;
        let mut page = super::requests::request_json(client, request)
            .await
            .map_err(api_err)?;
        let items = match page.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            Some(Value::Null) | None => Vec::new(),
            Some(_) => {
                return Err(api_err(ApiError::Unexpected(format!(
                    "{url}: items is not a list"
                ))));
            }
        };
        let metadata = page.get("metadata");
        let text = |key: &str| {
            metadata
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let (rv, next) = (text("resourceVersion"), text("continue"));
        if let Some(selector) = settings
            .shard_selector
            .as_ref()
            .filter(|_| continue_token.is_none())
        {
            // A server that applied the selector echoes it (`metadata.shardInfo`; v1.37
            // does for built-in resources, not for custom ones, which it filters all the
            // same). Either way the multiplexer's gate keeps only this replica's share.
            let echoed = metadata.and_then(|m| m.pointer("/shardInfo/selector"))
                == Some(&Value::from(selector.as_str()));
            tracing::debug!(%url, "Listing this replica's share with a shardSelector (echoed by the API server: {echoed}).");
        }
        for item in items {
            send(sink, WatchItem::Listed(item)).await?;
        }
        match next {
            Some(token) => continue_token = Some(token),
            None => {
                send(sink, WatchItem::ListDone).await?;
                return rv.ok_or_else(|| api_err(ApiError::Unexpected(format!("{url}: no resourceVersion"))));
            }
        }
    }
}

/// Whether the server refused a request for its `shardSelector` (kube-apiserver 1.37
/// answers an unparsable one with a 500 `invalid shard selector: ...`), as opposed to
/// failing it for any other reason (then it is retried as it is).
fn refuses_shard_selector(error: &ApiError) -> bool {
    matches!(error.code(), Some(400 | 422 | 500)) && error.to_string().contains("invalid shard selector")
}

/// Adds the `shardSelector` parameter, if any (kube's parameters do not know it yet).
fn sharded(mut request: http::Request<Vec<u8>>, settings: &WatchSettings) -> http::Request<Vec<u8>> {
    if let Some(selector) = &settings.shard_selector {
        let uri = request.uri().to_string();
        let separator = if uri.contains('?') { '&' } else { '?' };
        let value: String = url::form_urlencoded::byte_serialize(selector.as_bytes()).collect();
        // A URI plus an encoded parameter is a URI: the parse cannot fail.
        if let Ok(uri) = format!("{uri}{separator}shardSelector={value}").parse() {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// Opens a watch from `rv`; `None` when the position expired (410 Gone).
async fn open_watch(
    client: &Client,
    url: &str,
    settings: &WatchSettings,
    rv: &str,
) -> Result<Option<impl futures::Stream<Item = Result<WatchEvent<Value>, kube::Error>> + use<>>, StepError> {
    // Bookmarks are on by default.
    let mut params = WatchParams {
        timeout: settings.server_timeout,
        ..WatchParams::default()
    };
    if let Some(selector) = &settings.label_selector {
        params = params.labels(&selector.to_string());
    }
    if let Some(selector) = &settings.field_selector {
        params = params.fields(selector);
    }
    let failed = |error| StepError::Api {
        error,
        resume: Some(rv.to_owned()),
    };
    let request = kube::core::Request::new(url)
        .watch(&params, rv)
        .map(|r| sharded(r, settings))
        .map_err(|e| failed(ApiError::Request(e.to_string())))?;
    match client.request_events::<Value>(request).await {
        Ok(stream) => Ok(Some(stream)),
        Err(error) => {
            let error = ApiError::from(error);
            if error.is_gone() {
                Ok(None)
            } else {
                Err(failed(error))
            }
        }
    }
}

/// Whether a `DELETED` event means the object no longer matches the label selector
/// rather than that it is gone: its last state (a deletion's always matches) does not
/// match.
fn left_selection(settings: &WatchSettings, object: &Value) -> bool {
    settings
        .label_selector
        .as_ref()
        .is_some_and(|selector| !selector.matches(object))
}

/// Watches from `rv` until the stream ends; returns the position to resume from, or
/// `None` when a re-list is needed (410 Gone).
async fn watch_once(
    client: &Client,
    url: &str,
    settings: &WatchSettings,
    rv: String,
    sink: &mpsc::Sender<WatchItem>,
    progressed: &mut bool,
) -> Result<Option<String>, StepError> {
    let Some(stream) = open_watch(client, url, settings, &rv).await? else {
        return Ok(None);
    };
    let mut stream = std::pin::pin!(stream);
    let mut position = rv;
    let ends_at = settings.client_timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        let mut wait = settings.inactivity_timeout;
        if let Some(ends_at) = ends_at {
            let left = ends_at.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                tracing::debug!(%url, "the watch request reached the client timeout; reconnecting");
                return Ok(Some(position));
            }
            wait = wait.min(left);
        }
        let next = match tokio::time::timeout(wait, stream.next()).await {
            Ok(next) => next,
            Err(_) if ends_at.is_some_and(|at| tokio::time::Instant::now() >= at) => {
                tracing::debug!(%url, "the watch request reached the client timeout; reconnecting");
                return Ok(Some(position));
            }
            Err(_) => {
                tracing::debug!(%url, "the watch stream is silent; reconnecting");
                return Ok(Some(position));
            }
        };
        let event = match next {
            None => return Ok(Some(position)),
            Some(Ok(event)) => event,
            Some(Err(error)) => {
                return Err(StepError::Api {
                    error: error.into(),
                    resume: Some(position),
                });
            }
        };
        let (kind, object) = match event {
            WatchEvent::Added(object) => (EventType::Added, object),
            WatchEvent::Modified(object) => (EventType::Modified, object),
            WatchEvent::Deleted(object) if left_selection(settings, &object) => {
                tracing::debug!(%url, "an object left the label selection; it is seen as modified");
                (EventType::Modified, object)
            }
            WatchEvent::Deleted(object) => (EventType::Deleted, object),
            WatchEvent::Bookmark(bookmark) => {
                position = bookmark.metadata.resource_version;
                *progressed = true;
                continue;
            }
            WatchEvent::Error(status) if status.code == 410 => {
                tracing::debug!(%url, "the watch position expired (410); re-listing");
                return Ok(None);
            }
            WatchEvent::Error(status) => {
                let error = ApiError::Status {
                    code: status.code,
                    reason: status.reason,
                    message: status.message,
                    retry_after: None,
                };
                return Err(StepError::Api {
                    error,
                    resume: Some(position),
                });
            }
        };
        if let Some(rv) = crate::structs::bodies::Body::new(&object).resource_version() {
            position.clear();
            position.push_str(rv);
        }
        *progressed = true;
        send(sink, WatchItem::Event(kind, object)).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> ApiError {
        ApiError::Status {
            code,
            reason: String::new(),
            message: message.into(),
            retry_after: None,
        }
    }

    #[test]
    fn only_a_refused_shard_selector_drops_it() {
        let refused =
            "invalid shard selector: unexpected expression kind 3; expected shardRange() call or || operator";
        assert!(refuses_shard_selector(&status(500, refused)));
        assert!(refuses_shard_selector(&status(400, refused)));
        assert!(!refuses_shard_selector(&status(
            500,
            "etcdserver: request timed out"
        )));
        assert!(
            !refuses_shard_selector(&status(503, refused)),
            "unavailable: retried as it is"
        );
    }

    #[test]
    fn the_shard_selector_is_one_more_encoded_parameter() {
        let settings = WatchSettings {
            shard_selector: Some("shardRange(object.metadata.uid, '0x0', '0x8') || x".into()),
            ..WatchSettings::default()
        };
        let request = kube::core::Request::new("/apis/kopf.dev/v1/kopfexamples")
            .list(&ListParams::default().limit(5))
            .unwrap();
        let uri = sharded(request, &settings).uri().to_string();
        assert!(uri.contains("limit=5&"), "{uri}");
        let (_, value) = uri.split_once("shardSelector=").unwrap();
        let decoded: Vec<(String, String)> = url::form_urlencoded::parse(format!("s={value}").as_bytes())
            .into_owned()
            .collect();
        assert_eq!(decoded[0].1, settings.shard_selector.unwrap());
        let plain = kube::core::Request::new("/api/v1/pods")
            .list(&ListParams::default())
            .unwrap();
        let unchanged = plain.uri().clone();
        assert_eq!(sharded(plain, &WatchSettings::default()).uri(), &unchanged);
    }
}
