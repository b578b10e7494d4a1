//! The operator: connects, discovers the served resources, and runs the reactor until a
//! termination signal.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use kopf_abi::{Failure, FailureKind, protocol::host_methods};
use kube::Client;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::structs::backoff::{Backoff, sleep_until_opt};
use crate::{
    clients::{
        auth, connection, events,
        scanning::{self, GroupFilter},
        urls::ResourcePath,
        watching::{WatchItem, WatchSettings, watch_continuously},
    },
    contexts::OperatorContext,
    engines::posting,
    observability::fields,
    options::RunOptions,
    plugin::{CallerInfo, HandlerRef, HostServices, PluginSet},
    reactor::{
        indexing::Indices,
        orchestration::{NamespaceScope, Orchestrator, wanted_streams},
        processing::ResourceProcessor,
        queueing::QueueSettings,
        shared::Shared,
        stopping::StopRegistry,
    },
    settings::{OperatorSettings, seconds},
    signals::{Control, PauseToggles},
    structs::references::{self, NamespacePattern, Resource},
};

/// Runs the operator with the loaded plugins until `control` stops it; `Ok(())` on a
/// graceful stop. `connection`, when given (an embedding application's, or the
/// emulator of `kopf run --embedded`), is used instead of the inferred kubeconfig; it
/// cannot be re-read, so re-authentication then relies on the login handlers alone.
#[allow(clippy::too_many_lines)] // split under issue 19
pub async fn run(
    options: RunOptions,
    plugins: PluginSet,
    control: Control,
    connection: Option<kube::Config>,
) -> anyhow::Result<()> {
    // Install the handlers before anything slow, so no early signal is lost.
    let mut signals = control.install()?;
    let fixed_config = connection.is_some();
    let config = match connection {
        Some(config) => config,
        None => connection::load_config(None).await?,
    };
    let relogin = crate::engines::activities::relogin(&plugins, &config, fixed_config);
    let config = crate::engines::activities::login(&plugins, config).await?;
    let (client, credentials) = auth::reauthenticating_client(config.clone(), relogin)?;
    let stop = signals.token().child_token();
    let toggles = PauseToggles::new();
    let mut context = OperatorContext {
        client: client.clone(),
        config,
        credentials: credentials.clone(),
        plugins: plugins.clone(),
        settings: settings_from(&options),
        options: options.clone(),
        toggles: toggles.clone(),
        stop: stop.clone(),
    };

    // Operator-level activities first: startup handlers may adjust the settings.
    context.settings = crate::engines::activities::run_startup(&context).await?;
    let settings = context.settings.clone();
    credentials
        .set_networking(&settings.networking)
        .context("cannot apply settings.networking")?;
    crate::engines::probing::start(&context).await?;
    let peering = crate::peering::start(&context).await?;
    let admission = crate::admission::start(&context).await?;

    let stops = Arc::new(StopRegistry::default());
    let indices = Arc::new(Indices::default());
    let services = Arc::new(EngineServices::start(
        client.clone(),
        &settings,
        stop.clone(),
        stops.clone(),
        indices.clone(),
        credentials.clone(),
    ));
    // Object log lines as events (`posting.loggers`), until the operator exits.
    let _log_posting = match (&services.events, settings.posting.loggers) {
        (Some(events), true) => Some(posting::start(
            &control.log_lines,
            posting_level(&settings),
            events.clone(),
            services.reporter.clone(),
        )),
        _ => None,
    };
    plugins.set_services(services);
    let plugins = match settings.execution.max_workers {
        Some(max_workers) => plugins.with_max_workers(max_workers),
        None => plugins,
    };
    let shared = Arc::new(Shared {
        client: client.clone(),
        plugins: plugins.clone(),
        progress: crate::persistence::progress::ProgressStorage::new(
            &settings.persistence.prefix,
            settings.persistence.v1,
        )?,
        diffbase: crate::persistence::diffbase::DiffBaseStorage::new(
            &settings.persistence.prefix,
            &settings.persistence.diffbase_key,
            settings.persistence.v1,
            Vec::new(),
        )?,
        settings: settings.clone(),
        stops: stops.clone(),
        exiting: stop.clone(),
        indices: indices.clone(),
    });
    let scope = namespace_scope(&options)?;
    let mut reactor = Reactor::new(client.clone(), shared, scope, &settings, toggles.shards());
    reactor.paused = !toggles.claim_running();
    // The API server may be unreachable or failing at start: retry with the networking
    // backoffs (the last one repeated) until it answers or the operator is stopped.
    let mut backoff = Backoff::from_seconds(&settings.networking.error_backoffs);
    loop {
        let error = match reactor.rescan().await {
            Ok(()) => break,
            Err(error) => error,
        };
        let Some(api_error) = error
            .downcast_ref::<crate::clients::ApiError>()
            .filter(|e| e.is_retriable())
        else {
            return Err(error.context("cannot discover the API resources"));
        };
        let pause = api_error.retry_delay(backoff.next_backoff(), settings.networking.enforce_retry_after);
        tracing::error!(
            target: "kopf.reactor",
            "Cannot discover the API resources at {} (attempt {}): {error:#}; retrying in {}s.",
            context.config.cluster_url,
            backoff.failures(),
            pause.as_secs_f64()
        );
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!(
        target: "kopf.reactor",
        "The operator is ready: serving {} resources, {}.",
        reactor.served.len(),
        reactor.scope.describe()
    );
    control.ready();

    // Observe CRDs (new resources may become servable) and, for patterns, namespaces.
    let (crd_tx, mut crd_rx) = mpsc::channel::<WatchItem>(64);
    let crds = ResourcePath {
        group: "apiextensions.k8s.io".into(),
        version: "v1".into(),
        plural: "customresourcedefinitions".into(),
        namespaced: false,
    };
    let observe = WatchSettings {
        page_size: 500,
        ..reactor.watch.clone()
    };
    let scanning = !settings.scanning.disabled;
    if scanning {
        tokio::spawn(watch_continuously(
            client.clone(),
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
    let (ns_tx, mut ns_rx) = mpsc::channel::<WatchItem>(64);
    if matches!(reactor.scope, NamespaceScope::Patterns(_)) && !scanning {
        tracing::warn!(target: "kopf.reactor", "Scanning is disabled: namespace patterns match no namespaces.");
        drop(ns_tx);
    } else if matches!(reactor.scope, NamespaceScope::Patterns(_)) {
        let namespaces = ResourcePath {
            group: String::new(),
            version: "v1".into(),
            plural: "namespaces".into(),
            namespaced: false,
        };
        tokio::spawn(watch_continuously(
            client.clone(),
            namespaces,
            None,
            observe,
            ns_tx,
            stop.clone(),
        ));
    } else {
        drop(ns_tx);
    }

    let mut rescan_at: Option<tokio::time::Instant> = None;
    let mut pauses = toggles.subscribe();
    let signal = loop {
        tokio::select! {
            signal = signals.recv() => break signal,
            Ok(()) = pauses.changed() => {
                let reasons = pauses.borrow_and_update().clone();
                // Claimed last: it records the streams as running (see `PauseToggles`).
                if reasons.is_empty() && reactor.paused && toggles.claim_running() {
                    tracing::info!(target: "kopf.reactor", "Resuming operations.");
                    reactor.paused = false;
                    reactor.reconcile_streams().await;
                } else if !reasons.is_empty() && !reactor.paused {
                    tracing::info!(target: "kopf.reactor", "Pausing operations: {reasons:?}.");
                    reactor.paused = true;
                    reactor.orchestrator.stop_all().await;
                    toggles.mark_stopped();
                }
            }
            Some(item) = crd_rx.recv() => {
                // Debounce bursts of CRD events into one re-discovery.
                if reactor.crd_item_needs_rescan(item) && rescan_at.is_none() {
                    rescan_at = Some(tokio::time::Instant::now() + Duration::from_millis(300));
                }
            }
            Some(item) = ns_rx.recv() => reactor.observe_namespace(item),
            _ = sleep_until_opt(rescan_at) => {
                rescan_at = None;
                if let Err(error) = reactor.rescan().await {
                    tracing::warn!(target: "kopf.reactor", "Re-discovery failed: {error}");
                }
            }
        }
    };
    tracing::info!(target: "kopf.reactor", "Signal {signal} is received. Operator is stopping.");
    stop.cancel();
    reactor.orchestrator.stop_all().await;
    admission.shutdown().await;
    crate::engines::activities::run_cleanup(&context).await;
    peering.shutdown().await;
    Ok(())
}

/// The settings implied by the command line.
fn settings_from(options: &RunOptions) -> OperatorSettings {
    let mut settings = OperatorSettings::default();
    settings.peering.priority = options.priority;
    settings.peering.standalone = options.standalone;
    settings.peering.clusterwide = options.clusterwide;
    if let Some(level) = &options.post_logs {
        settings.posting.loggers = true;
        settings.posting.level = level.clone();
    }
    if let Some(name) = &options.peering_name {
        settings.peering.name = name.clone();
        settings.peering.mandatory = true;
    }
    settings
}

/// The namespace scope of `-n`/`-A`: cluster-wide by default (with Kopf's warning).
fn namespace_scope(options: &RunOptions) -> anyhow::Result<NamespaceScope> {
    if options.clusterwide {
        return Ok(NamespaceScope::Clusterwide);
    }
    if options.namespaces.is_empty() {
        tracing::warn!(target: "kopf.reactor", "No namespaces are specified: serving the whole cluster (use -A to silence this).");
        return Ok(NamespaceScope::Clusterwide);
    }
    let parts: Vec<String> = options
        .namespaces
        .iter()
        .flat_map(|n| n.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    let patterns: Vec<NamespacePattern> = parts.iter().map(|p| NamespacePattern::new(p)).collect();
    let literal: Option<BTreeSet<String>> = patterns
        .iter()
        .map(|p| p.specific_name().map(str::to_owned))
        .collect();
    Ok(match literal {
        Some(names) => NamespaceScope::Names(names),
        None => NamespaceScope::Patterns(parts),
    })
}

/// The running reactor: discovered resources, their processors and their streams.
struct Reactor {
    client: Client,
    shared: Arc<Shared>,
    scope: NamespaceScope,
    watch: WatchSettings,
    orchestrator: Orchestrator<ResourceProcessor>,
    /// Served resources and their processors, by `plural.version.group`.
    served: BTreeMap<String, (Resource, Arc<ResourceProcessor>)>,
    /// Namespaces that match the patterns (only for [`NamespaceScope::Patterns`]).
    namespaces: BTreeSet<String>,
    /// Namespaces seen during the current namespace listing.
    listing: Option<BTreeSet<String>>,
    /// Whether the operator is paused (no watch streams run).
    paused: bool,
    /// What the last discovery scanned and found: `(group, version, plural)`.
    discovered: (GroupFilter, BTreeSet<(String, String, String)>),
    /// CRDs of the CRD watch's first listing; None once it is done.
    first_crd_listing: Option<Vec<Value>>,
}

impl Reactor {
    fn new(
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
            ..WatchSettings::default()
        };
        let queue = QueueSettings {
            idle_timeout: seconds(settings.queueing.idle_timeout),
            exit_timeout: seconds(settings.queueing.exit_timeout),
            shards: shards.clone(),
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
    fn knows_crd(&self, crd: &Value) -> bool {
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
    fn crd_item_needs_rescan(&mut self, item: WatchItem) -> bool {
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
    fn resource_handlers(&self) -> Vec<HandlerRef> {
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
    async fn rescan(&mut self) -> anyhow::Result<()> {
        let handlers = self.resource_handlers();
        let groups: Option<BTreeSet<String>> = handlers
            .iter()
            .map(|h| h.spec().selector.as_ref().and_then(|s| s.group.clone()))
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
                    for resource in found {
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
        self.reconcile_streams().await;
        Ok(())
    }

    /// Starts the streams that should run and stops those that should not.
    async fn reconcile_streams(&mut self) {
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
    fn observe_namespace(&mut self, item: WatchItem) {
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
                    body.pointer("/metadata/name").and_then(Value::as_str),
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
                let Some(name) = body.pointer("/metadata/name").and_then(Value::as_str) else {
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

/// `settings.posting.level` as Python's level number (INFO if it is not a level).
fn posting_level(settings: &OperatorSettings) -> u32 {
    fields::level_number(&settings.posting.level).unwrap_or_else(|| {
        tracing::warn!(target: "kopf.activities", "settings.posting.level {:?} is not a level; using INFO.", settings.posting.level);
        20
    })
}

/// The host services of the engine: what plugins may ask through `HostTable::call`.
struct EngineServices {
    events: Option<mpsc::UnboundedSender<Value>>,
    reporter: events::Reporter,
    /// `settings.posting.level` as Python's level number.
    posting_level: u32,
    stops: Arc<StopRegistry>,
    indices: Arc<Indices>,
    /// The source of `client.config`: the operator's current connection settings.
    credentials: Arc<auth::Credentials>,
    /// The engine's runtime, for re-logins asked by plugins (host calls are synchronous).
    runtime: tokio::runtime::Handle,
}

impl EngineServices {
    /// Starts the event poster (a background task) and returns the services.
    fn start(
        client: Client,
        settings: &OperatorSettings,
        stop: CancellationToken,
        stops: Arc<StopRegistry>,
        indices: Arc<Indices>,
        credentials: Arc<auth::Credentials>,
    ) -> Self {
        let runtime = tokio::runtime::Handle::current();
        let reporter = events::Reporter {
            component: settings.posting.reporting_component.clone(),
            instance: settings.posting.reporting_instance.clone(),
            name_prefix: settings.posting.event_name_prefix.clone(),
        };
        let posting_level = posting_level(settings);
        if !settings.posting.enabled {
            return Self {
                events: None,
                reporter,
                posting_level,
                stops,
                indices,
                credentials,
                runtime,
            };
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => break,
                    event = rx.recv() => match event { Some(e) => e, None => break },
                };
                if let Err(error) = events::post_event(&client, &event).await {
                    tracing::warn!(target: "kopf.objects", "Failed to post an event: {error}");
                }
            }
            // Flush what is queued, briefly, so events of the last moments are not lost.
            while let Ok(event) = rx.try_recv() {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), events::post_event(&client, &event)).await;
            }
        });
        Self {
            events: Some(tx),
            reporter,
            posting_level,
            stops,
            indices,
            credentials,
            runtime,
        }
    }
}

impl EngineServices {
    /// The answer to `client.config`. A plugin whose client got a 401 sends the
    /// `generation` of the settings it used as `unauthorized_generation`: if they are
    /// still the current ones, the operator re-authenticates first (single-flight with
    /// its own re-logins) and answers with the fresh settings.
    fn client_config(&self, payload: &str) -> Value {
        let stale = serde_json::from_str::<Value>(payload)
            .ok()
            .and_then(|p| p.get("unauthorized_generation").and_then(Value::as_u64));
        if let Some(seen) = stale
            && seen == self.credentials.generation()
        {
            let (tx, rx) = std::sync::mpsc::channel();
            let credentials = self.credentials.clone();
            self.runtime.spawn(async move {
                let _ = tx.send(credentials.refresh(seen).await);
            });
            match rx.recv_timeout(auth::LOGIN_TIMEOUT + Duration::from_secs(5)) {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(target: "kopf.activities", "A plugin's client got a 401: {error}")
                }
                Err(_) => {
                    tracing::warn!(target: "kopf.activities", "A plugin's client got a 401; re-authentication did not finish in time.")
                }
            }
        }
        let mut answer = client_config_json(&self.credentials.config());
        answer["generation"] = Value::from(self.credentials.generation());
        answer
    }
}

/// The operator's connection settings as plugins' own kube clients need them (the SDK's
/// `client` feature reads this): cluster URL, default namespace, CA certificates (base64
/// DER), TLS options, proxy, and the kubeconfig user entry (token, client certificate and
/// key, token file, exec plugin...).
fn client_config_json(config: &kube::Config) -> Value {
    use base64::Engine as _;
    let root_cert = config.root_cert.as_ref().map(|certs| {
        certs
            .iter()
            .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
            .collect::<Vec<_>>()
    });
    serde_json::json!({
        "cluster_url": config.cluster_url.to_string(),
        "default_namespace": config.default_namespace,
        "root_cert": root_cert,
        "accept_invalid_certs": config.accept_invalid_certs,
        "tls_server_name": config.tls_server_name,
        "proxy_url": config.proxy_url.as_ref().map(ToString::to_string),
        "auth_info": serde_json::to_value(&config.auth_info).unwrap_or(Value::Null),
    })
}

impl HostServices for EngineServices {
    fn call(
        &self,
        _caller: &CallerInfo,
        method: &str,
        _version: u32,
        payload: &str,
    ) -> Result<String, Failure> {
        match method {
            host_methods::EVENT_POST => {
                let payload: Value = serde_json::from_str(payload)
                    .map_err(|e| Failure::new(FailureKind::BAD_PAYLOAD, format!("event.post: {e}")))?;
                let text = |key: &str| payload.get(key).and_then(Value::as_str).unwrap_or_default();
                // `ctx.info/warn/exception` say their level: below `posting.level`, they
                // are not posted (Kopf's `kopf.info/warn/exception`); `ctx.event` has none.
                if let Some(level) = payload
                    .get("level")
                    .and_then(Value::as_str)
                    .and_then(fields::level_number)
                    && level < self.posting_level
                {
                    return Ok("{}".into());
                }
                let object = payload.get("object").cloned().unwrap_or(Value::Null);
                let event = events::build_event(
                    &events::InvolvedObject::from_body(&object),
                    &self.reporter,
                    text("type"),
                    text("reason"),
                    text("message"),
                );
                if let Some(events) = &self.events {
                    // A closed queue means the operator is stopping: the event is dropped.
                    let _ = events.send(event);
                }
                Ok("{}".into())
            }
            host_methods::INDEX_GET => {
                let payload: Value = serde_json::from_str(payload)
                    .map_err(|e| Failure::new(FailureKind::BAD_PAYLOAD, format!("{method}: {e}")))?;
                let name = payload.get("index").and_then(Value::as_str).unwrap_or_default();
                let key = payload.get("key").unwrap_or(&Value::Null);
                match self.indices.get(name, key) {
                    Some(values) => Ok(Value::Array(values).to_string()),
                    None => Err(Failure::new(
                        FailureKind::BAD_PAYLOAD,
                        format!("no index named {name:?}"),
                    )),
                }
            }
            host_methods::INDEX_ITEMS => {
                let payload: Value = serde_json::from_str(payload)
                    .map_err(|e| Failure::new(FailureKind::BAD_PAYLOAD, format!("{method}: {e}")))?;
                let name = payload.get("index").and_then(Value::as_str).unwrap_or_default();
                match self.indices.items(name) {
                    Some(items) => Ok(serde_json::to_string(&items)
                        .map_err(|e| Failure::new(FailureKind::INTERNAL, format!("{method}: {e}")))?),
                    None => Err(Failure::new(
                        FailureKind::BAD_PAYLOAD,
                        format!("no index named {name:?}"),
                    )),
                }
            }
            host_methods::DAEMON_STOPPED | host_methods::DAEMON_WAIT => {
                let payload: Value = serde_json::from_str(payload)
                    .map_err(|e| Failure::new(FailureKind::BAD_PAYLOAD, format!("{method}: {e}")))?;
                let Some(call_id) = payload.get("call_id").and_then(Value::as_u64) else {
                    return Err(Failure::new(
                        FailureKind::BAD_PAYLOAD,
                        format!("{method}: no call_id"),
                    ));
                };
                let wait = (method == host_methods::DAEMON_WAIT).then(|| {
                    payload
                        .get("timeout")
                        .and_then(Value::as_f64)
                        .map(crate::settings::seconds)
                });
                Ok(self.stops.answer(call_id, wait).to_string())
            }
            host_methods::CLIENT_CONFIG => Ok(self.client_config(payload).to_string()),
            other => Err(Failure::new(
                FailureKind::UNSUPPORTED,
                format!("host method {other:?} is not supported yet"),
            )),
        }
    }
}
