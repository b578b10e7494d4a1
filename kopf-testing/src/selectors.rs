//! Label and field selectors, as kube parses and matches them.

use std::collections::BTreeMap;

use serde_json::Value;

/// One label requirement.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelReq {
    /// `key=value`, `key==value`.
    Eq(String, String),
    /// `key!=value` (also matches when the key is absent).
    NotEq(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also matches when the key is absent).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    NotExists(String),
}

/// A parsed label selector (all requirements must hold).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector(pub Vec<LabelReq>);

fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = vec![];
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && k.matches('/').count() <= 1
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63 && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected parenthesised set, found {rest:?}"))?;
    let vals: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if let Some(bad) = vals.iter().find(|v| !valid_value(v)) {
        return Err(format!("invalid label value: {bad:?}"));
    }
    Ok(vals)
}

impl LabelSelector {
    /// Parse kube's selector syntax; the error text is suitable for a 400 BadRequest.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self::default());
        }
        let mut reqs = vec![];
        for term in split_top_level(s) {
            let term = term.trim();
            if term.is_empty() {
                return Err(format!("unable to parse requirement: empty term in {s:?}"));
            }
            if let Some(k) = term.strip_prefix('!') {
                let k = k.trim();
                if !valid_key(k) {
                    return Err(format!("invalid label key {k:?}"));
                }
                reqs.push(LabelReq::NotExists(k.into()));
                continue;
            }
            let end = term
                .find(|c: char| c.is_whitespace() || "=!(".contains(c))
                .unwrap_or(term.len());
            let key = &term[..end];
            if !valid_key(key) {
                return Err(format!("invalid label key {key:?}"));
            }
            let rest = term[end..].trim_start();
            let req = if rest.is_empty() {
                LabelReq::Exists(key.into())
            } else if let Some(v) = rest.strip_prefix("!=") {
                LabelReq::NotEq(key.into(), v.trim().into())
            } else if let Some(v) = rest.strip_prefix("==") {
                LabelReq::Eq(key.into(), v.trim().into())
            } else if let Some(v) = rest.strip_prefix('=') {
                LabelReq::Eq(key.into(), v.trim().into())
            } else if let Some(r) = rest.strip_prefix("notin") {
                LabelReq::NotIn(key.into(), parse_set(r)?)
            } else if let Some(r) = rest.strip_prefix("in") {
                LabelReq::In(key.into(), parse_set(r)?)
            } else {
                return Err(format!(
                    "unable to parse requirement: found {rest:?}, expected: in, notin, =, ==, !="
                ));
            };
            if let LabelReq::Eq(_, v) | LabelReq::NotEq(_, v) = &req
                && !valid_value(v)
            {
                return Err(format!("invalid label value: {v:?}"));
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Is it empty (matches everything)?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Does a label map match?
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => labels.get(k) == Some(v),
            LabelReq::NotEq(k, v) => labels.get(k) != Some(v),
            LabelReq::In(k, vs) => labels.get(k).is_some_and(|x| vs.contains(x)),
            LabelReq::NotIn(k, vs) => labels.get(k).is_none_or(|x| !vs.contains(x)),
            LabelReq::Exists(k) => labels.contains_key(k),
            LabelReq::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// One field requirement: `(path, value, equal?)`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldReq {
    /// Dotted field path, e.g. `metadata.name`.
    pub path: String,
    /// Expected value.
    pub value: String,
    /// `=`/`==` (true) or `!=` (false).
    pub equal: bool,
}

/// A parsed field selector.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector(pub Vec<FieldReq>);

impl FieldSelector {
    /// Parse `a.b=c,d!=e`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self::default());
        }
        let mut reqs = vec![];
        for term in s.split(',') {
            let term = term.trim();
            let (path, value, equal) = if let Some((p, v)) = term.split_once("!=") {
                (p, v, false)
            } else if let Some((p, v)) = term.split_once("==") {
                (p, v, true)
            } else if let Some((p, v)) = term.split_once('=') {
                (p, v, true)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{term}'"));
            };
            let path = path.trim();
            if path.is_empty() {
                return Err(format!("invalid selector: '{s}'"));
            }
            reqs.push(FieldReq {
                path: path.into(),
                value: value.trim().into(),
                equal,
            });
        }
        Ok(Self(reqs))
    }

    /// Is it empty?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Does it only use metadata.name / metadata.namespace (checkable without parsing the object)?
    pub fn only_identity(&self) -> bool {
        self.0
            .iter()
            .all(|r| r.path == "metadata.name" || r.path == "metadata.namespace")
    }

    /// Match against identity fields only.
    pub fn matches_identity(&self, namespace: &str, name: &str) -> bool {
        self.0.iter().all(|r| {
            let actual = match r.path.as_str() {
                "metadata.name" => name,
                "metadata.namespace" => namespace,
                _ => return true,
            };
            (actual == r.value) == r.equal
        })
    }

    /// Match against a full object.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| {
            let mut cur = Some(obj);
            for p in r.path.split('.') {
                cur = cur.and_then(|c| c.get(p));
            }
            let actual = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == r.value) == r.equal
        })
    }
}

/// Fields kube-apiserver lets a field selector use on a resource, beyond `metadata.name` and
/// `metadata.namespace`, and whether an unknown one is refused with the resource's own field-label
/// conversion wording (`field label not supported: X`) or the generic one.
fn extra_fields(def: &crate::resources::ResourceDef) -> (Vec<&str>, bool) {
    if def.custom {
        return (def.selectable_fields.iter().map(|s| s.as_str()).collect(), true);
    }
    match (def.group.as_str(), def.plural.as_str()) {
        ("", "pods") => (
            vec![
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.podIPs",
                "status.nominatedNodeName",
            ],
            true,
        ),
        ("", "events") | ("events.k8s.io", "events") => (
            vec![
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            true,
        ),
        ("", "secrets") => (vec!["type"], true),
        ("", "namespaces") => (vec!["status.phase", "name"], true),
        ("", "services") => (vec!["spec.clusterIP", "spec.type"], true),
        _ => (vec![], false),
    }
}

/// 400 BadRequest for a field selector on a field the resource does not support, worded as
/// kube-apiserver words it (lists and watches alike).
pub(crate) fn check_supported(
    def: &crate::resources::ResourceDef,
    sel: &FieldSelector,
) -> Result<(), String> {
    let (extra, own_wording) = extra_fields(def);
    for r in &sel.0 {
        let p = r.path.as_str();
        if p == "metadata.name" || p == "metadata.namespace" || extra.contains(&p) {
            continue;
        }
        return Err(if own_wording {
            format!("field label not supported: {p}")
        } else {
            format!("\"{p}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"")
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn all_operators() {
        let l = labels(&[("a", "1"), ("b", "2")]);
        for (sel, want) in [
            ("a=1", true),
            ("a==1", true),
            ("a!=1", false),
            ("c!=1", true),
            ("a in (1,3)", true),
            ("a in (3)", false),
            ("a notin (3, 4)", true),
            ("c notin (3)", true),
            ("a", true),
            ("c", false),
            ("!c", true),
            ("!a", false),
            ("a=1,b in (2),!c", true),
            ("", true),
        ] {
            assert_eq!(LabelSelector::parse(sel).unwrap().matches(&l), want, "{sel}");
        }
        assert!(LabelSelector::parse("a in 1").is_err());
        assert!(LabelSelector::parse("a=b=c").is_err());
        assert!(LabelSelector::parse("a ~ b").is_err());
    }

    #[test]
    fn fields() {
        let f = FieldSelector::parse("metadata.name=x,metadata.namespace!=y").unwrap();
        assert!(f.matches_identity("z", "x"));
        assert!(!f.matches_identity("y", "x"));
        assert!(FieldSelector::parse("garbage").is_err());
    }
}
