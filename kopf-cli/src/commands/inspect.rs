//! `kopf inspect`: a table (or JSON) of the handlers of some plugins.

use std::fmt::Write as _;

use anyhow::Result;
use kopf_abi::protocol::{FilterValue, Filters, HandlerSpec};
use serde_json::{Value, json};

use crate::plugin::{PluginSet, render_selector};

/// The combined descriptions as JSON: `[{"path": ..., "description": {...}}, ...]`.
pub fn to_json(plugins: &PluginSet) -> Result<String> {
    let docs: Vec<Value> = plugins
        .plugins()
        .iter()
        .map(|p| Ok(json!({"path": p.path().display().to_string(), "description": serde_json::to_value(p.description())?})))
        .collect::<Result<_, serde_json::Error>>()?;
    Ok(serde_json::to_string_pretty(&Value::Array(docs))?)
}

/// A readable table of every handler.
pub fn to_table(plugins: &PluginSet) -> String {
    let header = ["PLUGIN", "KIND", "ID", "SELECTOR", "FILTERS", "OPTIONS", "MODE"].map(str::to_owned);
    let mut rows = vec![header];
    for h in plugins.handlers() {
        let spec = h.spec();
        rows.push([
            h.plugin().name(),
            spec.kind.to_string(),
            spec.id.clone(),
            render_selector(spec.selector.as_ref()),
            filters_summary(&spec.filters),
            options_summary(spec),
            if spec.is_async { "async" } else { "sync" }.to_owned(),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if plugins.handlers().is_empty() {
        out.push_str("(no handlers)\n");
    }
    out
}

fn filter_value(v: &FilterValue) -> String {
    match v {
        FilterValue::Equals(Value::String(s)) => s.clone(),
        FilterValue::Equals(other) => other.to_string(),
        FilterValue::Present => "PRESENT".to_owned(),
        FilterValue::Absent => "ABSENT".to_owned(),
        FilterValue::Callback => "<callback>".to_owned(),
    }
}

/// `labels:a=b,annotations:c=PRESENT,field=spec.x,value=<callback>,when=<callback>` or `-`.
pub fn filters_summary(f: &Filters) -> String {
    let mut parts = Vec::new();
    for (k, v) in &f.labels {
        parts.push(format!("label:{k}={}", filter_value(v)));
    }
    for (k, v) in &f.annotations {
        parts.push(format!("annotation:{k}={}", filter_value(v)));
    }
    if let Some(field) = &f.field {
        parts.push(format!("field={field}"));
    }
    for (name, v) in [("value", &f.value), ("old", &f.old), ("new", &f.new)] {
        if let Some(v) = v {
            parts.push(format!("{name}={}", filter_value(v)));
        }
    }
    if f.when {
        parts.push("when=<callback>".to_owned());
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(",")
    }
}

/// `timeout=60,retries=3` or `-`.
pub fn options_summary(spec: &HandlerSpec) -> String {
    let Ok(Value::Object(map)) = serde_json::to_value(&spec.options) else {
        return "-".to_owned();
    };
    if map.is_empty() {
        return "-".to_owned();
    }
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            // Owned kinds as selectors are shown (`owns=[configmaps.v1]`), not as JSON.
            _ if k == "owns" => {
                let owned = spec.options.owns.iter().flatten();
                let owned: Vec<String> = owned.map(|s| crate::plugin::render_selector(Some(s))).collect();
                format!("owns=[{}]", owned.join(" "))
            }
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}
