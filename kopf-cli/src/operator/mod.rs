//! The operator: connects, discovers the served resources, and runs the reactor until a
//! termination signal.

use std::{collections::BTreeSet, sync::Arc};

use anyhow::Context as _;

use crate::{
    clients::{auth, connection},
    contexts::OperatorContext,
    engines::posting,
    observability::metrics::Metrics,
    options::RunOptions,
    plugin::PluginSet,
    reactor::{indexing::Indices, orchestration::NamespaceScope, shared::Shared, stopping::StopRegistry},
    settings::OperatorSettings,
    signals::{Control, PauseToggles},
    structs::references::NamespacePattern,
};

mod services;
mod serving;

use services::{EngineServices, posting_level};
use serving::Reactor;

/// Runs the operator with the loaded plugins until `control` stops it; `Ok(())` on a
/// graceful stop. `connection`, when given (an embedding application's, or the
/// emulator of `kopf run --embedded`), is used instead of the inferred kubeconfig; it
/// cannot be re-read, so re-authentication then relies on the login handlers alone.
pub async fn run(
    options: RunOptions,
    plugins: PluginSet,
    control: Control,
    connection: Option<kube::Config>,
) -> anyhow::Result<()> {
    // Install the handlers before anything slow, so no early signal is lost.
    let mut signals = control.install()?;
    // This operator's own: every part below records into it, `/metrics` serves it.
    let metrics = Metrics::default();
    let (client, credentials, config) = connect(&metrics, &plugins, connection).await?;
    let stop = signals.token().child_token();
    let toggles = PauseToggles::new(metrics.clone());
    let mut context = OperatorContext {
        client: client.clone(),
        config,
        credentials: credentials.clone(),
        plugins: plugins.clone(),
        settings: settings_from(&options),
        options: options.clone(),
        toggles: toggles.clone(),
        readiness: Arc::default(),
        stop: stop.clone(),
        metrics: metrics.clone(),
    };

    // Operator-level activities first: startup handlers may adjust the settings.
    context.settings = crate::engines::activities::run_startup(&context).await?;
    let settings = context.settings.clone();
    credentials
        .set_networking(&settings.networking)
        .context("cannot apply settings.networking")?;
    let indices = Arc::new(Indices::default());
    let indexing_timeout = options
        .environment
        .indexing_timeout
        .unwrap_or(crate::reactor::indexing::INDEXING_TIMEOUT);
    crate::engines::probing::start(&context, vec![indexing_check(&indices, indexing_timeout)]).await?;
    refuse_owns_with_sharding(&options, &plugins)?;
    let peering = crate::peering::start(&context).await?;
    let admission = crate::admission::start(&context).await?;

    let stops = Arc::new(StopRegistry::default());
    let services = Arc::new(EngineServices::start(
        client.clone(),
        &settings,
        stop.clone(),
        stops.clone(),
        indices.clone(),
        credentials.clone(),
        metrics.clone(),
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
        progress: crate::persistence::storages::progress_storage(&settings.persistence)?,
        diffbase: crate::persistence::storages::diffbase_storage(&settings.persistence)?,
        settings: settings.clone(),
        stops: stops.clone(),
        exiting: stop.clone(),
        indices: indices.clone(),
        readiness: context.readiness.clone(),
        metrics,
    });
    let scope = namespace_scope(&options)?;
    let mut reactor = Reactor::new(client.clone(), shared, scope, &settings, toggles.shards());
    reactor.paused = !toggles.claim_running();
    if !reactor
        .discover_until_it_answers(&settings, &context.config.cluster_url, &stop)
        .await?
    {
        return Ok(());
    }
    tracing::info!(
        target: "kopf.reactor",
        "The operator is ready: serving {} resources, {}.",
        reactor.served.len(),
        reactor.scope.describe()
    );
    context.readiness.discovered();
    control.ready();

    let observed = reactor.observe_crds_and_namespaces(&settings, &stop);
    let signal = reactor.serve_until_signal(&mut signals, &toggles, observed).await;
    tracing::info!(target: "kopf.reactor", "Signal {signal} is received. Operator is stopping.");
    if control.os_signals {
        // Only the binary: an embedding application's process is not ours to end.
        let timeout = settings.process.ultimate_exiting_timeout;
        crate::signals::exit_after(timeout.map(crate::settings::seconds));
    }
    stop.cancel();
    reactor.orchestrator.stop_all().await;
    shut_down(&context, &plugins, admission, peering).await;
    Ok(())
}

/// The parts after the reactor, in Kopf's order: the webhooks, the cleanup handlers, then
/// the peering or the Lease.
async fn shut_down(
    context: &OperatorContext,
    plugins: &PluginSet,
    admission: crate::admission::Admission,
    peering: crate::peering::Peering,
) {
    admission.shutdown().await;
    crate::engines::activities::run_cleanup(context).await;
    if peering.hands_over() {
        // The stopped workers abandoned their calls, which run on in the plugins: the next
        // leader or owner must not start the same handlers while they do. The Lease loop
        // renews on its own thread meanwhile, and the reactor is never marked stopped
        // here, so a ring member cannot acknowledge a new view before it leaves.
        crate::reactor::processing::settle_plugin_calls(plugins, "handing the objects over").await;
    }
    peering.shutdown().await;
}

/// Connects: the kubeconfig (or the given `connection`, which cannot be re-read), the
/// login handlers, and a client that re-authenticates after a 401.
async fn connect(
    metrics: &Metrics,
    plugins: &PluginSet,
    connection: Option<kube::Config>,
) -> anyhow::Result<(kube::Client, Arc<auth::Credentials>, kube::Config)> {
    let fixed_config = connection.is_some();
    let config = match connection {
        Some(config) => config,
        None => connection::load_config(None).await?,
    };
    let relogin = crate::engines::activities::relogin(metrics, plugins, &config, fixed_config);
    let login = crate::engines::activities::login(metrics, plugins, config).await?;
    let config = login.config;
    let (client, credentials) = auth::reauthenticating_client(config.clone(), relogin, metrics.clone())?;
    credentials.set_expiration(login.expires);
    Ok((client, credentials, config))
}

/// The liveness check of the indices: failing while they stay incomplete for longer than
/// `timeout` (`KOPF_INDEXING_TIMEOUT`).
fn indexing_check(
    indices: &Arc<Indices>,
    timeout: std::time::Duration,
) -> crate::engines::probing::LivenessCheck {
    let indices = indices.clone();
    (
        "kopf.indexing".to_owned(),
        Arc::new(move || indices.stalled(timeout)),
    )
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
    let parts: Vec<String> = crate::structs::references::namespace_parts(&options.namespaces)
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

/// A child's owner may be another replica's, so its wake-up would be lost: refused (fail
/// closed) rather than half-working.
fn refuse_owns_with_sharding(options: &RunOptions, plugins: &PluginSet) -> anyhow::Result<()> {
    if options.sharding.is_some()
        && plugins
            .handlers()
            .iter()
            .any(crate::reactor::owning::owns_children)
    {
        anyhow::bail!("handlers with `owns` are not supported with --sharding (yet)");
    }
    Ok(())
}
