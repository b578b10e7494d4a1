//! Which watch streams run: one per served resource and namespace (or cluster-wide).
//!
//! Kopf's `orchestration.py` + `observation.py`: cluster-scoped resources and `-A` get
//! one cluster-wide stream; with `-n`, namespaced resources get one stream per matching
//! namespace. Literal namespace names are watched directly; patterns (globs, `!`) need
//! the namespaces observed live, and streams start and stop as namespaces come and go.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use kube::Client;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::queueing::{ObjectProcessor, QueueSettings, multiplex};
use crate::clients::{
    urls::ResourcePath,
    watching::{WatchItem, WatchSettings, watch_continuously},
};

/// Which namespaces the operator serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceScope {
    /// `-A`: cluster-wide streams.
    Clusterwide,
    /// `-n` with literal names only: one stream per name.
    Names(BTreeSet<String>),
    /// `-n` with patterns: namespaces are observed and matched live.
    Patterns(Vec<String>),
}

impl NamespaceScope {
    /// A human-readable description for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Clusterwide => "cluster-wide".into(),
            Self::Names(names) => format!("in namespaces {names:?}"),
            Self::Patterns(patterns) => format!("in namespaces matching {patterns:?}"),
        }
    }
}

/// A watch stream's identity: the resource and the namespace (`None` = cluster-wide).
pub type StreamKey = (ResourcePath, Option<String>);

/// Starts and stops watch streams, each feeding a multiplexer of per-object workers.
pub struct Orchestrator<P: ObjectProcessor> {
    client: Client,
    watch: WatchSettings,
    queue: QueueSettings,
    limit: Arc<Semaphore>,
    streams: HashMap<StreamKey, (CancellationToken, tokio::task::JoinHandle<()>, Arc<P>)>,
    _processor: std::marker::PhantomData<P>,
}

impl<P: ObjectProcessor> Orchestrator<P> {
    /// An orchestrator with no streams yet; `worker_limit` bounds concurrent processing
    /// across all streams (Kopf's `settings.queueing.worker_limit`, unbounded if `None`).
    pub fn new(
        client: Client,
        watch: WatchSettings,
        queue: QueueSettings,
        worker_limit: Option<usize>,
    ) -> Self {
        let permits = worker_limit.unwrap_or(Semaphore::MAX_PERMITS);
        Self {
            client,
            watch,
            queue,
            limit: Arc::new(Semaphore::new(permits)),
            streams: HashMap::new(),
            _processor: std::marker::PhantomData,
        }
    }

    /// The streams currently running.
    pub fn keys(&self) -> impl Iterator<Item = &StreamKey> {
        self.streams.keys()
    }

    /// Starts a stream for `key` with `processor`, unless it already runs.
    pub fn ensure(&mut self, key: StreamKey, processor: Arc<P>) {
        if self.streams.contains_key(&key) {
            return;
        }
        let stop = CancellationToken::new();
        let (sink, items) = mpsc::channel::<WatchItem>(256);
        let (path, namespace) = key.clone();
        // `--sharding`: ask the server for this replica's share only (streams restart
        // with every assignment, see `peering::sharding`); label filters that all the
        // handlers share go to the server too.
        let watch = WatchSettings {
            shard_selector: self.queue.shards.server_selector(),
            label_selector: processor.label_selector(),
            ..self.watch.clone()
        };
        if let Some(selector) = &watch.label_selector {
            tracing::debug!(target: "kopf.reactor", "Watching {} with the label selector {selector} (all its handlers' filters share it).", describe(&key));
        }
        let watcher = watch_continuously(self.client.clone(), path, namespace, watch, sink, stop.clone());
        let queue = self.queue.clone();
        let limit = self.limit.clone();
        let stream = describe(&key);
        processor.stream_started(&stream);
        let owner = processor.clone();
        let task = tokio::spawn(async move {
            // The watcher ends on stop; the multiplexer drains its workers after that.
            let multiplexer = multiplex(stream, items, processor, queue, limit);
            let _ = tokio::join!(watcher, multiplexer);
        });
        tracing::debug!(target: "kopf.reactor", "Starting the watch-stream for {}.", describe(&key));
        self.streams.insert(key, (stop, task, owner));
    }

    /// Stops the stream for `key` and waits for its workers to finish.
    pub async fn remove(&mut self, key: &StreamKey) {
        if let Some((stop, task, processor)) = self.streams.remove(key) {
            tracing::debug!(target: "kopf.reactor", "Stopping the watch-stream for {}.", describe(key));
            stop.cancel();
            let _ = task.await;
            processor.stream_stopped(&describe(key));
        }
    }

    /// Stops every stream for a pause, waits for all workers to finish, then for the
    /// handler calls they abandoned (see [`ObjectProcessor::settle`]).
    pub async fn pause_all(&mut self) {
        let processor = self.streams.values().next().map(|(_, _, p)| p.clone());
        self.stop_all().await;
        if let Some(processor) = processor {
            processor.settle().await;
        }
    }

    /// Stops every stream (pause or exit) and waits for all workers to finish.
    pub async fn stop_all(&mut self) {
        for (stop, _, _) in self.streams.values() {
            stop.cancel();
        }
        for (key, (_, task, processor)) in self.streams.drain() {
            let _ = task.await;
            processor.stream_stopped(&describe(&key));
        }
    }
}

fn describe((path, namespace): &StreamKey) -> String {
    let scope = namespace
        .as_deref()
        .map(|ns| format!(" in {ns:?}"))
        .unwrap_or_else(|| " cluster-wide".into());
    format!("{}.{}.{}{scope}", path.plural, path.version, path.group)
}

/// The streams a set of resources needs in a scope, given the namespaces that exist
/// (only consulted for [`NamespaceScope::Patterns`]).
pub fn wanted_streams(
    resources: &[ResourcePath],
    scope: &NamespaceScope,
    matching_namespaces: &BTreeSet<String>,
) -> Vec<StreamKey> {
    let mut keys = Vec::new();
    for path in resources {
        if !path.namespaced {
            keys.push((path.clone(), None));
            continue;
        }
        match scope {
            NamespaceScope::Clusterwide => keys.push((path.clone(), None)),
            NamespaceScope::Names(names) => {
                keys.extend(names.iter().map(|ns| (path.clone(), Some(ns.clone()))));
            }
            NamespaceScope::Patterns(_) => {
                keys.extend(
                    matching_namespaces
                        .iter()
                        .map(|ns| (path.clone(), Some(ns.clone()))),
                );
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(plural: &str, namespaced: bool) -> ResourcePath {
        ResourcePath {
            group: "kopf.dev".into(),
            version: "v1".into(),
            plural: plural.into(),
            namespaced,
        }
    }

    #[test]
    fn cluster_scoped_resources_always_get_one_stream() {
        let resources = [path("things", true), path("clusterthings", false)];
        let names = NamespaceScope::Names(BTreeSet::from(["a".to_owned(), "b".to_owned()]));
        let keys = wanted_streams(&resources, &names, &BTreeSet::new());
        assert_eq!(keys.len(), 3);
        assert!(keys.contains(&(path("clusterthings", false), None)));
        assert!(keys.contains(&(path("things", true), Some("b".into()))));
        let all = wanted_streams(&resources, &NamespaceScope::Clusterwide, &BTreeSet::new());
        assert_eq!(
            all,
            vec![(path("things", true), None), (path("clusterthings", false), None)]
        );
        let live = BTreeSet::from(["x".to_owned()]);
        let patterns = wanted_streams(&resources, &NamespaceScope::Patterns(vec!["x*".into()]), &live);
        assert_eq!(patterns[0], (path("things", true), Some("x".into())));
    }
}
