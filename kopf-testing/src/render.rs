//! Response rendering: version rewriting, PartialObjectMetadata, Tables for kubectl.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

use crate::resources::{PrinterColumn, ResourceDef};

/// What representation the client asked for (`Accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// The objects.
    Full,
    /// `as=PartialObjectMetadata(List)`.
    Metadata,
    /// `as=Table`.
    Table,
}

impl OutputMode {
    /// Pick from the Accept header (the first acceptable alternative wins; protobuf is answered with JSON).
    pub fn from_accept(accept: Option<&str>) -> Self {
        let Some(accept) = accept else { return Self::Full };
        for alt in accept.split(',') {
            let alt = alt.trim();
            if alt.contains("as=Table") {
                return Self::Table;
            }
            if alt.contains("as=PartialObjectMetadata") {
                return Self::Metadata;
            }
            if alt.starts_with("application/json")
                || alt.starts_with("*/*")
                || alt.starts_with("application/yaml")
            {
                return Self::Full;
            }
        }
        Self::Full
    }
}

/// The object JSON in the requested version.
pub fn in_version(def: &ResourceDef, version: &str, json: &Bytes) -> Bytes {
    if version == def.storage_version {
        return json.clone();
    }
    match serde_json::from_slice::<Value>(json) {
        Ok(mut v) => {
            v["apiVersion"] = Value::String(def.api_version(version));
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
        }
        Err(_) => json.clone(),
    }
}

fn partial_metadata(v: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": v.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// Format an age like kubectl (`5s`, `3m20s`, `4h`, `2d`).
pub fn human_age(created: Option<&str>) -> Value {
    let Some(ts) = created.and_then(|c| c.parse::<jiff::Timestamp>().ok()) else {
        return Value::Null;
    };
    let secs = (jiff::Timestamp::now().as_second() - ts.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    let s = if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        format!("{m}m{}s", secs % 60)
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if d < 2 {
        format!("{h}h")
    } else if d < 8 {
        format!("{d}d{}h", h % 24)
    } else {
        format!("{d}d")
    };
    Value::String(s)
}

/// Evaluate a simple JSONPath (`.a.b[0].c`, optionally in braces).
pub fn json_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let p = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut cur = v;
    for seg in p.split('.').filter(|s| !s.is_empty()) {
        let (name, idx) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        if let Some(i) = idx {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

fn columns(def: &ResourceDef) -> Vec<PrinterColumn> {
    let mut cols = vec![PrinterColumn {
        name: "Name".into(),
        type_: "string".into(),
        json_path: ".metadata.name".into(),
        priority: 0,
    }];
    if def.printer_columns.is_empty() {
        if def.group.is_empty() && def.plural == "namespaces" {
            cols.push(PrinterColumn {
                name: "Status".into(),
                type_: "string".into(),
                json_path: ".status.phase".into(),
                priority: 0,
            });
        }
        cols.push(PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            json_path: ".metadata.creationTimestamp".into(),
            priority: 0,
        });
    } else {
        cols.extend(def.printer_columns.iter().cloned());
    }
    cols
}

fn column_defs(def: &ResourceDef) -> Value {
    let defs: Vec<Value> = columns(def)
        .iter()
        .map(|c| {
            let (t, f) = match (c.name.as_str(), c.type_.as_str()) {
                ("Name", _) => ("string", "name"),
                (_, "date") => ("string", ""),
                (_, t) => (t, ""),
            };
            json!({"name": c.name, "type": t, "format": f, "description": "", "priority": c.priority})
        })
        .collect();
    Value::Array(defs)
}

fn row(def: &ResourceDef, v: &Value) -> Value {
    let cells: Vec<Value> = columns(def)
        .iter()
        .map(|c| {
            let val = json_path(v, &c.json_path);
            match c.type_.as_str() {
                "date" => human_age(val.and_then(|x| x.as_str())),
                _ => val.cloned().unwrap_or(Value::Null),
            }
        })
        .collect();
    json!({"cells": cells, "object": partial_metadata(v)})
}

/// A Table for a set of objects.
pub fn table(def: &ResourceDef, items: &[Value], rv: &str, cont: Option<&str>, with_columns: bool) -> Value {
    let rows: Vec<Value> = items.iter().map(|v| row(def, v)).collect();
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    let mut t = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "rows": rows});
    if with_columns {
        t["columnDefinitions"] = column_defs(def);
    } else {
        t["columnDefinitions"] = Value::Null;
    }
    t
}

/// Render a single object.
pub fn object(def: &ResourceDef, version: &str, json: &Bytes, mode: OutputMode, with_columns: bool) -> Bytes {
    match mode {
        OutputMode::Full => in_version(def, version, json),
        OutputMode::Metadata | OutputMode::Table => {
            let v: Value = serde_json::from_slice(json).unwrap_or(Value::Null);
            let out = if mode == OutputMode::Metadata {
                partial_metadata(&v)
            } else {
                let rv = v
                    .pointer("/metadata/resourceVersion")
                    .and_then(|r| r.as_str())
                    .unwrap_or_default()
                    .to_string();
                table(def, std::slice::from_ref(&v), &rv, None, with_columns)
            };
            Bytes::from(serde_json::to_vec(&out).unwrap_or_default())
        }
    }
}

/// Render a list.
pub fn list(
    def: &ResourceDef,
    version: &str,
    items: &[Bytes],
    rv: u64,
    cont: Option<&str>,
    remaining: Option<u64>,
    mode: OutputMode,
) -> Bytes {
    if mode == OutputMode::Table {
        let vals: Vec<Value> = items
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
            .collect();
        return Bytes::from(
            serde_json::to_vec(&table(def, &vals, &rv.to_string(), cont, true)).unwrap_or_default(),
        );
    }
    let (kind, api_version) = match mode {
        OutputMode::Metadata => (
            "PartialObjectMetadataList".to_string(),
            "meta.k8s.io/v1".to_string(),
        ),
        _ => (def.list_kind.clone(), def.api_version(version)),
    };
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = json!(r);
    }
    let mut out = BytesMut::with_capacity(64 + items.iter().map(|b| b.len() + 1).sum::<usize>());
    let head = json!({"kind": kind, "apiVersion": api_version, "metadata": meta});
    let head = serde_json::to_vec(&head).unwrap_or_default();
    // Drop the closing brace and append the items array.
    out.put_slice(&head[..head.len().saturating_sub(1)]);
    out.put_slice(b",\"items\":[");
    for (i, b) in items.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        match mode {
            OutputMode::Metadata => {
                let v: Value = serde_json::from_slice(b).unwrap_or(Value::Null);
                out.put_slice(&serde_json::to_vec(&partial_metadata(&v)).unwrap_or_default());
            }
            _ => out.put_slice(&in_version(def, version, b)),
        }
    }
    out.put_slice(b"]}");
    out.freeze()
}
