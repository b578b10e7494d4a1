//! `kopf peering`: administer peering between operators — list the peers, freeze and
//! resume operators, clean dead records, install the CRDs.

use std::io::Write as _;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use kube::Client;
use serde_json::Value;

use crate::{
    clients::{ApiError, connection, patching},
    options::detect_own_id,
    peering::{
        PeeringError, keepalive,
        records::{self, Peer},
        resources::{self, PeeringResource, Scope},
    },
};

/// `kopf peering` arguments.
#[derive(Debug, Args)]
pub struct PeeringArgs {
    /// Log debug details of failures.
    #[arg(short = 'd', long, global = true)]
    pub debug: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: PeeringCommand,
}

/// The `kopf peering` subcommands.
#[derive(Debug, Subcommand)]
pub enum PeeringCommand {
    /// Show the peers: identity, priority, last seen, alive or dead.
    List(TargetArgs),
    /// Pause the operators with a lower priority for a while (Kopf's `kopf freeze`).
    Freeze(FreezeArgs),
    /// Remove a freeze made by `freeze` with the same identity (Kopf's `kopf resume`).
    Resume(ResumeArgs),
    /// Remove the records of dead peers.
    Clean(TargetArgs),
    /// Print the peering CRDs, or apply them (and the peering objects) to the cluster.
    Install(InstallArgs),
}

/// Which peering objects: `-A` for the cluster-wide one, `-n` for namespaced ones.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The peering object's name (`list`/`clean`: all objects when not given).
    #[arg(short = 'P', long = "peering", value_name = "NAME", env = "KOPF_PEERING")]
    pub peering: Option<String>,
    /// Use the KopfPeering of these namespaces; repeatable or comma-separated.
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
    pub namespaces: Vec<String>,
    /// Use the cluster-wide ClusterKopfPeering (the default when no -n is given).
    #[arg(short = 'A', long = "all-namespaces", conflicts_with = "namespaces")]
    pub clusterwide: bool,
}

impl TargetArgs {
    fn scope(&self) -> Scope {
        if self.namespaces.is_empty() {
            Scope::Cluster
        } else {
            Scope::Namespaced
        }
    }

    fn namespaces(&self) -> Vec<Option<String>> {
        if self.namespaces.is_empty() {
            return vec![None];
        }
        crate::structs::references::namespace_parts(&self.namespaces)
            .map(|n| Some(n.to_owned()))
            .collect()
    }

    fn name(&self) -> &str {
        self.peering.as_deref().unwrap_or("default")
    }
}

/// `kopf peering freeze` arguments.
#[derive(Debug, Args)]
pub struct FreezeArgs {
    /// Which peering objects.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The identity of the freeze record (default: user@host).
    #[arg(short = 'i', long = "id", value_name = "ID")]
    pub id: Option<String>,
    /// The priority of the freeze: operators with a lower one pause.
    #[arg(short = 'p', long, default_value_t = 100, allow_negative_numbers = true)]
    pub priority: i64,
    /// Development mode: priority 666.
    #[arg(long, conflicts_with = "priority")]
    pub dev: bool,
    /// How long the freeze lasts, in seconds.
    #[arg(short = 't', long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub lifetime: u64,
    /// A message for the log (accepted for Kopf compatibility; not stored).
    #[arg(short = 'm', long)]
    pub message: Option<String>,
}

/// `kopf peering resume` arguments.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Which peering objects.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The identity of the freeze record to remove (default: user@host).
    #[arg(short = 'i', long = "id", value_name = "ID")]
    pub id: Option<String>,
}

/// `kopf peering install` arguments.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Apply to the cluster instead of printing; with -A or -n, also create the peering objects.
    #[arg(long)]
    pub apply: bool,
    /// Which peering objects to create with --apply.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Runs the peering subcommand.
pub async fn run(args: PeeringArgs) -> Result<()> {
    if let PeeringCommand::Install(install) = &args.command
        && !install.apply
    {
        return write_out(resources::CRDS_YAML);
    }
    let config = connection::load_config(None).await?;
    let client = connection::make_client(config)?;
    match args.command {
        PeeringCommand::List(target) => list(&client, &target).await,
        PeeringCommand::Freeze(freeze) => {
            let identity = freeze.id.clone().unwrap_or_else(|| detect_own_id(true));
            let priority = if freeze.dev {
                crate::options::DEV_PRIORITY
            } else {
                freeze.priority
            };
            let lifetime = i64::try_from(freeze.lifetime).context("--lifetime is too large")?;
            let resource = detect(&client, freeze.target.scope()).await?;
            for namespace in freeze.target.namespaces() {
                let name = freeze.target.name();
                let ns = namespace.as_deref();
                let where_ = resource.describe(ns, name);
                ensure_object(&client, &resource, ns, name).await?;
                keepalive::touch(&client, &resource, ns, name, &identity, priority, lifetime)
                    .await
                    .map_err(|e| explain(e, &where_))?;
                let note = freeze
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                write_out(&format!(
                    "Frozen operators below priority {priority} in {where_} for {lifetime}s as {identity:?}{note}\n"
                ))?;
            }
            Ok(())
        }
        PeeringCommand::Resume(resume) => {
            let identity = resume.id.clone().unwrap_or_else(|| detect_own_id(true));
            let resource = detect(&client, resume.target.scope()).await?;
            for namespace in resume.target.namespaces() {
                let name = resume.target.name();
                let ns = namespace.as_deref();
                let where_ = resource.describe(ns, name);
                let found = keepalive::touch(&client, &resource, ns, name, &identity, 0, 0)
                    .await
                    .map_err(|e| explain(e, &where_))?;
                if found.is_none() {
                    anyhow::bail!("the peering object {where_} does not exist");
                }
                write_out(&format!("Resumed: removed {identity:?} from {where_}\n"))?;
            }
            Ok(())
        }
        PeeringCommand::Clean(target) => clean(&client, &target).await,
        PeeringCommand::Install(install) => apply(&client, &install.target).await,
    }
}

fn write_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Turns API failures into actionable messages.
fn explain(error: ApiError, what: &str) -> anyhow::Error {
    if error.is_permission() {
        anyhow::anyhow!(
            "access denied to {what}: {error} (the account needs get, list, patch on the peering resources)"
        )
    } else if error.is_not_found() {
        anyhow::anyhow!("{what} does not exist: {error}")
    } else {
        anyhow::anyhow!("request for {what} failed: {error}")
    }
}

async fn detect(client: &Client, scope: Scope) -> Result<PeeringResource> {
    match resources::detect(client, scope).await {
        Ok(Some(resource)) => Ok(resource),
        Ok(None) => Err(PeeringError::NotInstalled(scope.kind()).into()),
        Err(error) => Err(explain(error, "the API discovery")),
    }
}

/// Creates the peering object if it does not exist.
async fn ensure_object(
    client: &Client,
    resource: &PeeringResource,
    namespace: Option<&str>,
    name: &str,
) -> Result<()> {
    let where_ = resource.describe(namespace, name);
    match patching::get(client, &resource.object_url(namespace, name)).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => {
            match patching::create(
                client,
                &resource.collection_url(namespace),
                &resource.new_object(namespace, name),
            )
            .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some(409) => Ok(()),
                Err(e) => Err(explain(e, &where_)),
            }
        }
        Err(e) => Err(explain(e, &where_)),
    }
}

/// The peering objects in scope: the named one, or all of them.
async fn objects(
    client: &Client,
    resource: &PeeringResource,
    target: &TargetArgs,
) -> Result<Vec<(Option<String>, Value)>> {
    let mut found = Vec::new();
    for namespace in target.namespaces() {
        let ns = namespace.as_deref();
        match &target.peering {
            Some(name) => {
                let where_ = resource.describe(ns, name);
                match patching::get(client, &resource.object_url(ns, name)).await {
                    Ok(body) => found.push((namespace.clone(), body)),
                    Err(e) => return Err(explain(e, &where_)),
                }
            }
            None => {
                let what = format!(
                    "{} {}",
                    resource.scope.plural(),
                    ns.map_or("cluster-wide".into(), |n| format!("in {n:?}"))
                );
                let list = patching::get(client, &resource.collection_url(ns))
                    .await
                    .map_err(|e| explain(e, &what))?;
                for item in list.get("items").and_then(Value::as_array).into_iter().flatten() {
                    let item_ns = item
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    found.push((item_ns.or(namespace.clone()), item.clone()));
                }
            }
        }
    }
    Ok(found)
}

fn object_name(body: &Value) -> &str {
    body.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?")
}

/// The peers table.
pub fn format_table(rows: &[(Option<String>, String, Peer)], now: jiff::Timestamp) -> String {
    let mut table: Vec<[String; 7]> = vec![[
        "NAMESPACE".into(),
        "PEERING".into(),
        "IDENTITY".into(),
        "PRIORITY".into(),
        "LIFETIME".into(),
        "LAST SEEN".into(),
        "STATE".into(),
    ]];
    for (namespace, peering, peer) in rows {
        let seen = peer.lastseen.map_or("-".into(), |t| {
            let ago = now.duration_since(t).as_secs();
            format!("{} ({ago}s ago)", records::format_timestamp(t))
        });
        table.push([
            namespace.clone().unwrap_or_else(|| "(cluster)".into()),
            peering.clone(),
            peer.identity.clone(),
            peer.priority.to_string(),
            format!("{}s", peer.lifetime),
            seen,
            if peer.is_dead(now) { "dead" } else { "alive" }.into(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| table.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

async fn list(client: &Client, target: &TargetArgs) -> Result<()> {
    let resource = detect(client, target.scope()).await?;
    let now = jiff::Timestamp::now();
    let mut rows = Vec::new();
    for (namespace, body) in objects(client, &resource, target).await? {
        let name = object_name(&body).to_owned();
        for peer in records::peers_of(&body) {
            rows.push((namespace.clone(), name.clone(), peer));
        }
    }
    if rows.is_empty() {
        return write_out("No peers.\n");
    }
    write_out(&format_table(&rows, now))
}

async fn clean(client: &Client, target: &TargetArgs) -> Result<()> {
    let resource = detect(client, target.scope()).await?;
    let now = jiff::Timestamp::now();
    let mut total = 0;
    for (namespace, body) in objects(client, &resource, target).await? {
        let name = object_name(&body).to_owned();
        let dead: Vec<String> = records::peers_of(&body)
            .into_iter()
            .filter(|p| p.is_dead(now))
            .map(|p| p.identity)
            .collect();
        if dead.is_empty() {
            continue;
        }
        let where_ = resource.describe(namespace.as_deref(), &name);
        keepalive::clean(client, &resource, namespace.as_deref(), &name, &dead)
            .await
            .map_err(|e| explain(e, &where_))?;
        for id in &dead {
            write_out(&format!("Removed the dead peer {id:?} from {where_}\n"))?;
        }
        total += dead.len();
    }
    write_out(&format!("Cleaned {total} dead peer(s).\n"))
}

async fn apply(client: &Client, target: &TargetArgs) -> Result<()> {
    let url = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    for doc in serde_yaml::Deserializer::from_str(resources::CRDS_YAML) {
        let crd: Value = serde::Deserialize::deserialize(doc).context("the built-in CRD YAML is invalid")?;
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match patching::create(client, url, &crd).await {
            Ok(_) => write_out(&format!("customresourcedefinition/{name} created\n"))?,
            Err(e) if e.code() == Some(409) => {
                write_out(&format!("customresourcedefinition/{name} unchanged (exists)\n"))?
            }
            Err(e) => return Err(explain(e, &format!("customresourcedefinition/{name}"))),
        }
    }
    if !target.clusterwide && target.namespaces.is_empty() {
        return Ok(());
    }
    // The CRDs may take a moment to be served: poll discovery with a deadline.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let resource = loop {
        if let Some(resource) = resources::detect(client, target.scope())
            .await
            .map_err(|e| explain(e, "the API discovery"))?
        {
            break resource;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(PeeringError::NotInstalled(target.scope().kind()).into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for namespace in target.namespaces() {
        let name = target.name();
        ensure_object(client, &resource, namespace.as_deref(), name).await?;
        write_out(&format!(
            "{} ready\n",
            resource.describe(namespace.as_deref(), name)
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_alive_and_dead() {
        let now: jiff::Timestamp = "2026-06-01T12:01:00Z".parse().unwrap();
        let seen: jiff::Timestamp = "2026-06-01T12:00:00Z".parse().unwrap();
        let rows = vec![
            (None, "default".to_owned(), Peer::own("alive-one", 10, 120, seen)),
            (
                Some("ns1".to_owned()),
                "default".to_owned(),
                Peer::own("dead-one", 5, 30, seen),
            ),
        ];
        let text = format_table(&rows, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAMESPACE"));
        assert!(
            lines[1].contains("(cluster)") && lines[1].contains("alive-one") && lines[1].ends_with("alive")
        );
        assert!(lines[2].contains("ns1") && lines[2].contains("60s ago") && lines[2].ends_with("dead"));
    }
}
