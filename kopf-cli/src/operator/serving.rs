//! The running reactor of an operator: the served resources it discovered, their
//! processors, and the watch streams that feed them (the namespaces and CRDs it follows).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use kube::Client;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    clients::{
        scanning::{self, GroupFilter},
        urls::ResourcePath,
        watching::{WatchItem, WatchSettings, watch_continuously},
    },
    plugin::HandlerRef,
    reactor::{
        orchestration::{NamespaceScope, Orchestrator, wanted_streams},
        owning::OwnerLink,
        processing::ResourceProcessor,
        queueing::QueueSettings,
        shared::Shared,
    },
    settings::{OperatorSettings, seconds},
    signals::{PauseToggles, Stopper},
    structs::backoff::{Backoff, sleep_until_opt},
    structs::references::{self, NamespacePattern, Resource},
};

/// The running reactor: discovered resources, their processors and their streams.
pub(super) struct Reactor {
    pub(super) client: Client,
    pub(super) shared: Arc<Shared>,
    pub(super) scope: NamespaceScope,
    pub(super) watch: WatchSettings,
    pub(super) orchestrator: Orchestrator<ResourceProcessor>,
    /// Served resources and their processors, by `plural.version.group`.
    pub(super) served: BTreeMap<String, (Resource, Arc<ResourceProcessor>)>,
    /// Namespaces that match the patterns (only for [`NamespaceScope::Patterns`]).
    pub(super) namespaces: BTreeSet<String>,
    /// Namespaces seen during the current namespace listing.
    pub(super) listing: Option<BTreeSet<String>>,
    /// Whether the operator is paused (no watch streams run).
    pub(super) paused: bool,
    /// What the last discovery scanned and found: `(group, version, plural)`.
    pub(super) discovered: (GroupFilter, BTreeSet<(String, String, String)>),
    /// CRDs of the CRD watch's first listing; None once it is done.
    pub(super) first_crd_listing: Option<Vec<Value>>,
}

impl Reactor {
    /// Discovers the served resources, retrying with the networking backoffs (the last
    /// one repeated) while the API server is unreachable or failing at start; `false`
    /// if the operator was stopped meanwhile.
    pub(super) async fn discover_until_it_answers(
        &mut self,
        settings: &OperatorSettings,
        cluster_url: &impl std::fmt::Display,
        stop: &CancellationToken,
    ) -> anyhow::Result<bool> {
        let mut backoff = Backoff::from_seconds(&settings.networking.error_backoffs);
        loop {
            let error = match self.rescan().await {
                Ok(()) => break,
                Err(error) => error,
            };
            let Some(api_error) = error
                .downcast_ref::<crate::clients::ApiError>()
                .filter(|e| e.is_retriable())
            else {
                return Err(error.context("cannot discover the API resources"));
            };
            let pause =
                api_error.retry_delay(backoff.next_backoff(), settings.networking.enforce_retry_after);
            tracing::error!(
                target: "kopf.reactor",
                "Cannot discover the API resources at {} (attempt {}): {error:#}; retrying in {}s.",
                cluster_url,
                backoff.failures(),
                pause.as_secs_f64()
            );
            tokio::select! {
                () = stop.cancelled() => return Ok(false),
                () = tokio::time::sleep(pause) => {}
            }
        }
        Ok(true)
    }

    /// Starts observing CRDs (new resources may become servable) and, for namespace
    /// patterns, namespaces; their watch items arrive through the returned channels.
    pub(super) fn observe_crds_and_namespaces(
        &self,
        settings: &OperatorSettings,
        stop: &CancellationToken,
    ) -> Observed {
        let (crd_tx, crd_rx) = mpsc::channel::<WatchItem>(64);
        let crds = ResourcePath {
            group: "apiextensions.k8s.io".into(),
            version: "v1".into(),
            plural: "customresourcedefinitions".into(),
            namespaced: false,
        };
        let observe = WatchSettings {
            page_size: 500,
            ..self.watch.clone()
        };
        let scanning = !settings.scanning.disabled;
        if scanning {
            tokio::spawn(watch_continuously(
                self.client.clone(),
                crds,
                None,
                observe.clone(),
                crd_tx,
                stop.clone(),
            ));
        } else {
            tracing::info!(target: "kopf.reactor", "Scanning is disabled: new CRDs and namespaces are not observed.");
            drop(crd_tx);
        }
        let (ns_tx, ns_rx) = mpsc::channel::<WatchItem>(64);
        if matches!(self.scope, NamespaceScope::Patterns(_)) && !scanning {
            tracing::warn!(target: "kopf.reactor", "Scanning is disabled: namespace patterns match no namespaces.");
            drop(ns_tx);
        } else if matches!(self.scope, NamespaceScope::Patterns(_)) {
            let namespaces = ResourcePath {
                group: String::new(),
                version: "v1".into(),
                plural: "namespaces".into(),
                namespaced: false,
            };
            tokio::spawn(watch_continuously(
                self.client.clone(),
                namespaces,
                None,
                observe,
                ns_tx,
                stop.clone(),
            ));
        } else {
            drop(ns_tx);
        }
        Observed {
            crds: crd_rx,
            namespaces: ns_rx,
        }
    }

    /// Serves until a termination signal: pauses and resumes with the toggles, re-discovers
    /// after CRD changes (debounced), follows the namespaces of patterns.
    pub(super) async fn serve_until_signal(
        &mut self,
        signals: &mut Stopper,
        toggles: &PauseToggles,
        mut observed: Observed,
    ) -> &'static str {
        let mut rescan_at: Option<tokio::time::Instant> = None;
        let mut pauses = toggles.subscribe();
        loop {
            tokio::select! {
                signal = signals.recv() => break signal,
                Ok(()) = pauses.changed() => {
                    let reasons = pauses.borrow_and_update().clone();
                    // Claimed last: it records the streams as running (see `PauseToggles`).
                if reasons.is_empty() && self.paused && toggles.claim_running() {
                        tracing::info!(target: "kopf.reactor", "Resuming operations.");
                        self.paused = false;
                        self.reconcile_streams().await;
                    } else if !reasons.is_empty() && !self.paused {
                        tracing::info!(target: "kopf.reactor", "Pausing operations: {reasons:?}.");
                        self.paused = true;
                        self.orchestrator.pause_all().await;
                    toggles.mark_stopped();
                    }
                }
                Some(item) = observed.crds.recv() => {
                    // Debounce bursts of CRD events into one re-discovery.
                    if self.crd_item_needs_rescan(item) && rescan_at.is_none() {
                        rescan_at = Some(tokio::time::Instant::now() + Duration::from_millis(300));
                    }
                }
                Some(item) = observed.namespaces.recv() => self.observe_namespace(item),
                _ = sleep_until_opt(rescan_at) => {
                    rescan_at = None;
                    if let Err(error) = self.rescan().await {
                        tracing::warn!(target: "kopf.reactor", "Re-discovery failed: {error}");
                    }
                }
            }
        }
    }

    pub(super) fn new(
        client: Client,
        shared: Arc<Shared>,
        scope: NamespaceScope,
        settings: &OperatorSettings,
        shards: &crate::signals::shards::ShardGate,
    ) -> Self {
        let watch = WatchSettings {
            server_timeout: settings.watching.server_timeout.map(|s| s as u32),
            inactivity_timeout: seconds(settings.watching.inactivity_timeout),
            reconnect_backoff: seconds(settings.watching.reconnect_backoff),
            client_timeout: settings.watching.client_timeout.map(seconds),
            enforce_retry_after: settings.networking.enforce_retry_after,
            error_backoffs: settings
                .networking
                .error_backoffs
                .iter()
                .copied()
                .map(seconds)
                .collect(),
            metrics: shared.metrics.clone(),
            ..WatchSettings::default()
        };
        let queue = QueueSettings {
            idle_timeout: seconds(settings.queueing.idle_timeout),
            exit_timeout: seconds(settings.queueing.exit_timeout),
            shards: shards.clone(),
            metrics: shared.metrics.clone(),
        };
        let orchestrator = Orchestrator::new(
            client.clone(),
            watch.clone(),
            queue,
            settings.queueing.worker_limit,
        );
        Self {
            client,
            shared,
            scope,
            watch,
            orchestrator,
            served: BTreeMap::new(),
            namespaces: BTreeSet::new(),
            listing: None,
            paused: false,
            discovered: (GroupFilter::All, BTreeSet::new()),
            first_crd_listing: Some(Vec::new()),
        }
    }

    /// Whether a CRD's served versions were all found by the last discovery (or its group was
    /// not scanned for): then its listing needs no re-discovery.
    pub(super) fn knows_crd(&self, crd: &Value) -> bool {
        let (filter, found) = &self.discovered;
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let GroupFilter::Only(groups) = filter
            && !groups.contains(group)
        {
            return true;
        }
        let plural = crd
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or_default();
        crd.pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
            .filter_map(|v| v.get("name").and_then(Value::as_str))
            .all(|version| found.contains(&(group.to_owned(), version.to_owned(), plural.to_owned())))
    }

    /// Whether a CRD watch item calls for a re-discovery. The first listing follows the
    /// discovery at start: it does only if it shows a CRD that discovery did not find.
    pub(super) fn crd_item_needs_rescan(&mut self, item: WatchItem) -> bool {
        match (item, self.first_crd_listing.as_mut()) {
            (WatchItem::Listed(crd), Some(listed)) => {
                listed.push(crd);
                false
            }
            (WatchItem::ListDone, Some(_)) => {
                let listed = self.first_crd_listing.take().unwrap_or_default();
                !listed.iter().all(|crd| self.knows_crd(crd))
            }
            (WatchItem::Event(..) | WatchItem::ListDone, _) => true,
            _ => false,
        }
    }

    /// The handlers that watch resources (not activities, not webhooks).
    pub(super) fn resource_handlers(&self) -> Vec<HandlerRef> {
        self.shared
            .plugins
            .handlers()
            .iter()
            .filter(|h| !h.kind().is_activity() && !h.kind().is_webhook() && h.spec().selector.is_some())
            .cloned()
            .collect()
    }

    /// Discovers the resources, resolves the handlers' selectors, and starts the streams
    /// of newly servable resources.
    pub(super) async fn rescan(&mut self) -> anyhow::Result<()> {
        let handlers = self.resource_handlers();
        let groups: Option<BTreeSet<String>> = handlers
            .iter()
            .flat_map(|h| {
                let owned = h.spec().options.owns.iter().flatten();
                h.spec().selector.iter().chain(owned).map(|s| s.group.clone())
            })
            .collect();
        let filter = match groups {
            Some(groups) => GroupFilter::Only(groups),
            None => GroupFilter::All,
        };
        let discovered = scanning::scan(&self.client, &filter).await?;
        let found = discovered
            .iter()
            .map(|r| (r.group.clone(), r.version.clone(), r.plural.clone()))
            .collect();
        self.discovered = (filter, found);
        let mut by_resource: BTreeMap<String, (Resource, Vec<HandlerRef>)> = BTreeMap::new();
        for handler in &handlers {
            let Some(selector) = handler.spec().selector.as_ref() else {
                continue;
            };
            match references::resolve(selector, discovered.iter()) {
                Ok(found) => {
                    for resource in self.ask_callable(handler, selector, found).await {
                        if !resource.is_watchable() {
                            tracing::warn!(target: "kopf.reactor", "Non-watchable resource will not be served: {resource}");
                            continue;
                        }
                        by_resource
                            .entry(resource.to_string())
                            .or_insert_with(|| (resource.clone(), Vec::new()))
                            .1
                            .push(handler.clone());
                    }
                }
                Err(error) => tracing::warn!(target: "kopf.reactor", "{error}"),
            }
        }
        for (key, (resource, handlers)) in by_resource {
            if self.served.contains_key(&key) {
                continue;
            }
            tracing::debug!(target: "kopf.reactor", "Serving {key} with {} handlers.", handlers.len());
            let processor = Arc::new(ResourceProcessor::new(
                self.shared.clone(),
                resource.clone(),
                &handlers,
            ));
            self.served.insert(key, (resource, processor));
        }
        self.link_owned(&discovered);
        self.reconcile_streams().await;
        Ok(())
    }

    /// A callable selector's candidates that its plugin accepts (Kopf's callable selectors);
    /// a resource it cannot decide on is not served (and said so).
    async fn ask_callable<'r>(
        &self,
        handler: &HandlerRef,
        selector: &kopf_abi::protocol::ResourceSelector,
        candidates: Vec<&'r Resource>,
    ) -> Vec<&'r Resource> {
        if !selector.callable {
            return candidates;
        }
        let mut accepted = Vec::new();
        for resource in candidates {
            let mut ask = kopf_abi::protocol::Invocation {
                purpose: kopf_abi::protocol::Purpose::Filter,
                resource: Some(resource.info()),
                ..Default::default()
            };
            ask.extra.insert("select_resource".into(), Value::Bool(true));
            match crate::actions::invocation::check_filters(&self.shared.plugins, handler, &ask).await {
                Ok(true) => accepted.push(resource),
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(target: "kopf.reactor", "{resource} is not served by {:?}: its resource selector failed: {error}", handler.id())
                }
            }
        }
        accepted
    }

    /// Links the kinds that `owns` handlers name to their owners, serving those kinds
    /// (with no handlers of their own) where no handler selects them.
    fn link_owned(&mut self, discovered: &[Resource]) {
        let owners: Vec<_> = self
            .served
            .values()
            .filter_map(|(r, p)| Some((r.clone(), p.owning.parents()?, p.owning.handlers().to_vec())))
            .collect();
        for (owner, parents, handlers) in owners {
            let mut by_child: BTreeMap<String, (Resource, Vec<HandlerRef>)> = BTreeMap::new();
            for handler in &handlers {
                for selector in handler.spec().options.owns.iter().flatten() {
                    match references::resolve(selector, discovered.iter()) {
                        Ok(found) => {
                            for child in found.into_iter().filter(|r| r.is_watchable()) {
                                let entry = by_child.entry(child.to_string());
                                let entry = entry.or_insert_with(|| (child.clone(), Vec::new()));
                                entry.1.push(handler.clone());
                            }
                        }
                        Err(error) => tracing::warn!(target: "kopf.reactor", "{error}"),
                    }
                }
            }
            for (key, (child, handlers)) in by_child {
                let (_, processor) = self.served.entry(key).or_insert_with(|| {
                    let processor = ResourceProcessor::new(self.shared.clone(), child.clone(), &[]);
                    (child, Arc::new(processor))
                });
                processor.owning.link(OwnerLink {
                    resource: owner.clone(),
                    parents: parents.clone(),
                    handlers,
                });
            }
        }
    }

    /// Starts the streams that should run and stops those that should not.
    pub(super) async fn reconcile_streams(&mut self) {
        if self.paused {
            return;
        }
        let mut wanted = Vec::new();
        for (resource, processor) in self.served.values() {
            let path = ResourcePath {
                group: resource.group.clone(),
                version: resource.version.clone(),
                plural: resource.plural.clone(),
                namespaced: resource.namespaced,
            };
            for key in wanted_streams(std::slice::from_ref(&path), &self.scope, &self.namespaces) {
                wanted.push((key, processor.clone()));
            }
        }
        let keep: BTreeSet<String> = wanted.iter().map(|(k, _)| format!("{k:?}")).collect();
        let obsolete: Vec<_> = self
            .orchestrator
            .keys()
            .filter(|k| !keep.contains(&format!("{k:?}")))
            .cloned()
            .collect();
        for key in obsolete {
            self.orchestrator.remove(&key).await;
        }
        for (key, processor) in wanted {
            self.orchestrator.ensure(key, processor);
        }
    }

    /// Tracks namespaces matching the patterns; streams follow on the next reconcile.
    pub(super) fn observe_namespace(&mut self, item: WatchItem) {
        let NamespaceScope::Patterns(patterns) = &self.scope else {
            return;
        };
        let patterns: Vec<NamespacePattern> = patterns.iter().map(|p| NamespacePattern::new(p)).collect();
        let matches = |name: &str| references::match_namespaces(name, &patterns);
        let changed = match item {
            WatchItem::ListStarted => {
                self.listing = Some(BTreeSet::new());
                false
            }
            WatchItem::Listed(body) => {
                if let (Some(listing), Some(name)) = (
                    self.listing.as_mut(),
                    crate::structs::bodies::Body::new(&body).name(),
                ) && matches(name)
                {
                    listing.insert(name.to_owned());
                }
                false
            }
            WatchItem::ListDone => {
                let listing = self.listing.take().unwrap_or_default();
                let changed = listing != self.namespaces;
                self.namespaces = listing;
                changed
            }
            WatchItem::Event(kind, body) => {
                let Some(name) = crate::structs::bodies::Body::new(&body).name() else {
                    return;
                };
                if !matches(name) {
                    return;
                }
                match kind {
                    crate::clients::watching::EventType::Deleted => self.namespaces.remove(name),
                    _ => self.namespaces.insert(name.to_owned()),
                }
            }
        };
        if changed && !self.paused {
            let wanted: Vec<_> = self
                .served
                .values()
                .map(|(r, p)| (r.clone(), p.clone()))
                .collect();
            for (resource, processor) in wanted {
                let path = ResourcePath {
                    group: resource.group.clone(),
                    version: resource.version.clone(),
                    plural: resource.plural.clone(),
                    namespaced: resource.namespaced,
                };
                for key in wanted_streams(std::slice::from_ref(&path), &self.scope, &self.namespaces) {
                    self.orchestrator.ensure(key, processor.clone());
                }
            }
        }
    }
}

/// The watch items of the CRDs and namespaces the operator observes.
pub(super) struct Observed {
    crds: mpsc::Receiver<WatchItem>,
    namespaces: mpsc::Receiver<WatchItem>,
}
