//! Discovered resources, resource selectors and namespace patterns, as Kopf's
//! `references.py`.
//!
//! Selector rules (Kopf's `Selector.check`/`select` and the reactor's ambiguity check):
//! - without a `version`, only the *preferred* version of a group matches;
//! - `everything` matches all resources except core `v1/events` and `events.k8s.io` events
//!   (the latter only in its preferred version, as in Kopf);
//! - for "specific" selectors (by kind/plural/singular/short name/any name, not by category
//!   or `everything`), a core-group match wins over other groups (`pods` is `v1/pods`, not
//!   `metrics.k8s.io` pods); if 2+ resources still match, the selector is ambiguous and
//!   Kopf refuses to serve it.

use std::collections::BTreeSet;
use std::fmt;

use globset::{GlobBuilder, GlobMatcher};
use kopf_abi::protocol::{ResourceInfo, ResourceSelector};
use serde_json::Value;

/// A resource kind as discovered from the API server (`/api/v1`, `/apis/{group}/{version}`).
/// Equality and hashing consider only `(group, version, plural)`, as in Kopf.
#[derive(Debug, Clone, Default)]
pub struct Resource {
    /// API group, `""` for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Plural name, the URL segment.
    pub plural: String,
    /// Kind, e.g. `Pod`.
    pub kind: String,
    /// Singular name (falls back to the lowercased kind when the server reports none).
    pub singular: String,
    /// Short names.
    pub shortcuts: BTreeSet<String>,
    /// Categories, e.g. `all`.
    pub categories: BTreeSet<String>,
    /// Subresources, e.g. `status`, `scale`.
    pub subresources: BTreeSet<String>,
    /// Whether the resource is namespaced.
    pub namespaced: bool,
    /// Whether the version is the group's preferred version.
    pub preferred: bool,
    /// Verbs the API supports for it.
    pub verbs: BTreeSet<String>,
}

impl PartialEq for Resource {
    fn eq(&self, other: &Self) -> bool {
        (&self.group, &self.version, &self.plural) == (&other.group, &other.version, &other.plural)
    }
}

impl Eq for Resource {}

impl std::hash::Hash for Resource {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (&self.group, &self.version, &self.plural).hash(state);
    }
}

impl fmt::Display for Resource {
    /// Kopf's `repr`: `kopfexamples.v1.kopf.dev`, `pods.v1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{}.{}.{}", self.plural, self.version, self.group);
        f.write_str(text.trim_matches('.'))
    }
}

/// Errors of resource references.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// A specific selector matches several resources in different groups.
    #[error(
        "ambiguous resources will not be served (try specifying API groups): {selector} => {candidates:?}"
    )]
    Ambiguous {
        /// The selector, as text.
        selector: String,
        /// The matching resources (`plural.version.group`).
        candidates: Vec<String>,
    },
    /// The discovery document is malformed.
    #[error("malformed API resource list: {0}")]
    Discovery(String),
    /// A selector is malformed.
    #[error("invalid resource selector {0}")]
    Selector(String),
    /// A namespace glob cannot be compiled.
    #[error("invalid namespace pattern {0:?}: {1}")]
    Pattern(String, String),
}

impl Resource {
    /// The `apiVersion` of objects of this resource: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The resource as handed to plugins.
    pub fn info(&self) -> ResourceInfo {
        ResourceInfo {
            group: self.group.clone(),
            version: self.version.clone(),
            plural: self.plural.clone(),
            kind: self.kind.clone(),
            namespaced: self.namespaced,
        }
    }

    /// Whether objects can be listed and watched (otherwise Kopf does not serve them).
    pub fn is_watchable(&self) -> bool {
        self.verbs.contains("watch") && self.verbs.contains("list")
    }

    /// Whether objects can be patched (needed for state-storing handlers).
    pub fn is_patchable(&self) -> bool {
        self.verbs.contains("patch")
    }

    /// Whether `status` is a subresource (then status patches go to `/status`).
    pub fn has_status_subresource(&self) -> bool {
        self.subresources.contains("status")
    }

    /// The resource as RBAC and the API server's refusals name it: `"pods/status" in the
    /// core API group`, `"kopfexamples" in API group "kopf.dev"`.
    pub fn rbac_text(&self, subresource: Option<&str>) -> String {
        let name = match subresource {
            Some(sub) => format!("{}/{sub}", self.plural),
            None => self.plural.clone(),
        };
        if self.group.is_empty() {
            format!("{name:?} in the core API group")
        } else {
            format!("{name:?} in API group {:?}", self.group)
        }
    }

    /// The API path (Kopf's `get_url` without a server): the list URL without a name, the
    /// object URL with one; namespaced URLs only for namespaced resources with a namespace.
    pub fn url(&self, namespace: Option<&str>, name: Option<&str>, subresource: Option<&str>) -> String {
        let mut parts: Vec<&str> = Vec::with_capacity(8);
        parts.push(if self.group.is_empty() && self.version == "v1" {
            "/api"
        } else {
            "/apis"
        });
        for p in [self.group.as_str(), self.version.as_str()] {
            if !p.is_empty() {
                parts.push(p);
            }
        }
        if let (true, Some(ns)) = (self.namespaced, namespace) {
            parts.push("namespaces");
            parts.push(ns);
        }
        parts.push(&self.plural);
        parts.extend(name.filter(|n| !n.is_empty()));
        parts.extend(subresource.filter(|s| !s.is_empty()));
        parts.join("/")
    }

    /// Build the resources of one `/api/v1` or `/apis/{group}/{version}` discovery response
    /// (`APIResourceList`), as Kopf's scanner: subresource entries (`pods/status`) become
    /// `subresources` of their main resource.
    pub fn from_api_resource_list(
        group: &str,
        version: &str,
        preferred: bool,
        list: &Value,
    ) -> Result<Vec<Resource>, ReferenceError> {
        let items = list
            .get("resources")
            .and_then(Value::as_array)
            .ok_or_else(|| ReferenceError::Discovery("no `resources` list".into()))?;
        let names = |v: Option<&Value>| -> BTreeSet<String> {
            v.and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        for item in items {
            let Some(plural) = item.get("name").and_then(Value::as_str) else {
                return Err(ReferenceError::Discovery("a resource without a name".into()));
            };
            if plural.contains('/') {
                continue;
            }
            let kind = item
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let singular = match item.get("singularName").and_then(Value::as_str) {
                Some(s) if !s.is_empty() => s.to_owned(),
                _ => kind.to_lowercase(),
            };
            let prefix = format!("{plural}/");
            let subresources = items
                .iter()
                .filter_map(|s| s.get("name").and_then(Value::as_str))
                .filter_map(|n| n.strip_prefix(&prefix))
                .map(str::to_owned)
                .collect();
            out.push(Resource {
                group: group.to_owned(),
                version: version.to_owned(),
                plural: plural.to_owned(),
                kind,
                singular,
                shortcuts: names(item.get("shortNames")),
                categories: names(item.get("categories")),
                subresources,
                namespaced: item.get("namespaced").and_then(Value::as_bool).unwrap_or(false),
                preferred,
                verbs: names(item.get("verbs")),
            });
        }
        Ok(out)
    }
}

/// Whether the selector names specific resources (kind/plural/singular/short name/any name),
/// as opposed to categories or `everything`. Only specific selectors can be ambiguous.
pub fn is_specific(sel: &ResourceSelector) -> bool {
    sel.kind.is_some()
        || sel.shortcut.is_some()
        || sel.plural.is_some()
        || sel.singular.is_some()
        || sel.any_name.is_some()
}

/// Whether one resource matches the selector (Kopf's `Selector.check`).
pub fn check(sel: &ResourceSelector, res: &Resource) -> bool {
    let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    eq(&sel.group, &res.group)
        && match &sel.version {
            // A callable sees every version (Kopf's callable selectors).
            None => res.preferred || sel.callable,
            Some(v) => *v == res.version,
        }
        && eq(&sel.kind, &res.kind)
        && eq(&sel.plural, &res.plural)
        && eq(&sel.singular, &res.singular)
        && sel.category.as_ref().is_none_or(|c| res.categories.contains(c))
        && sel.shortcut.as_ref().is_none_or(|s| res.shortcuts.contains(s))
        && sel.any_name.as_ref().is_none_or(|n| {
            *n == res.kind || *n == res.plural || *n == res.singular || res.shortcuts.contains(n)
        })
        && (!(sel.everything || sel.callable) || !is_event_resource(res))
}

/// Core `v1/events` or (preferred-version) `events.k8s.io` events: never served by
/// `everything` (Kopf's `EVENTS`/`EVENTS_K8S` selectors).
fn is_event_resource(res: &Resource) -> bool {
    let named_events = |r: &Resource| {
        r.kind == "events" || r.plural == "events" || r.singular == "events" || r.shortcuts.contains("events")
    };
    (res.group.is_empty() && res.version == "v1" && named_events(res))
        || (res.group == "events.k8s.io" && res.preferred && named_events(res))
}

/// The resources a selector matches (Kopf's `Selector.select`): for specific selectors,
/// core-group matches win over other groups.
pub fn select<'a>(
    sel: &ResourceSelector,
    resources: impl IntoIterator<Item = &'a Resource>,
) -> Vec<&'a Resource> {
    let mut result: Vec<&Resource> = resources.into_iter().filter(|r| check(sel, r)).collect();
    if is_specific(sel) && result.iter().any(|r| r.group.is_empty()) {
        result.retain(|r| r.group.is_empty());
    }
    result.sort_by(|a, b| (&a.group, &a.version, &a.plural).cmp(&(&b.group, &b.version, &b.plural)));
    result.dedup();
    result
}

/// [`select`] plus Kopf's refusal of ambiguous specific selectors.
pub fn resolve<'a>(
    sel: &ResourceSelector,
    resources: impl IntoIterator<Item = &'a Resource>,
) -> Result<Vec<&'a Resource>, ReferenceError> {
    let selected = select(sel, resources);
    if is_specific(sel) && selected.len() > 1 {
        return Err(ReferenceError::Ambiguous {
            selector: selector_text(sel),
            candidates: selected.iter().map(|r| r.to_string()).collect(),
        });
    }
    Ok(selected)
}

/// The marker argument meaning Kopf's `EVERYTHING` in [`parse_selector_args`].
pub const EVERYTHING: &str = "EVERYTHING";

/// Build a selector from Kopf's positional forms (`Selector.__post_init__`):
/// `("kopf.dev", "v1", "kopfexamples")`, `("kopf.dev/v1", "kopfexamples")`,
/// `("v1", "pods")`, `("kopf.dev", "kopfexamples")` (group only), `("kopfexamples.kopf.dev")`,
/// `("kopfexamples.v1.kopf.dev")`, `("kopfexamples")`, `(EVERYTHING)`.
pub fn parse_selector_args(args: &[&str]) -> Result<ResourceSelector, ReferenceError> {
    let bad = |why: &str| ReferenceError::Selector(format!("{args:?}: {why}"));
    let mut sel = ResourceSelector::default();
    let name = |n: &str, sel: &mut ResourceSelector| {
        if n == EVERYTHING {
            sel.everything = true;
        } else {
            sel.any_name = Some(n.to_owned());
        }
    };
    match *args {
        [] => return Err(bad("no resource names")),
        [a1] => {
            let parts: Vec<&str> = a1.split('.').collect();
            let versioned = parts.len() >= 2 && is_k8s_version(parts[1]);
            if a1 != EVERYTHING && versioned {
                if let Some((_, rest)) = a1.split_once('.').and_then(|(_, r)| r.split_once('.')) {
                    sel.group = Some(rest.to_owned());
                }
                sel.version = Some(parts[1].to_owned());
                sel.any_name = Some(parts[0].to_owned());
            } else if a1 != EVERYTHING && a1.contains('.') {
                let (n, g) = a1.split_once('.').unwrap_or((a1, ""));
                sel.group = Some(g.to_owned());
                sel.any_name = Some(n.to_owned());
            } else {
                name(a1, &mut sel);
            }
        }
        [a1, a2] => {
            if let Some((g, v)) = a1.rsplit_once('/') {
                sel.group = Some(g.to_owned());
                sel.version = Some(v.to_owned());
            } else if a1 == "v1" {
                sel.group = Some(String::new());
                sel.version = Some("v1".to_owned());
            } else {
                sel.group = Some(a1.to_owned());
            }
            name(a2, &mut sel);
        }
        [a1, a2, a3] => {
            sel.group = Some(a1.to_owned());
            sel.version = Some(a2.to_owned());
            name(a3, &mut sel);
        }
        _ => return Err(bad("too many positional arguments; max 3 are accepted")),
    }
    if sel.any_name.as_deref() == Some("") {
        return Err(bad("names must not be empty strings"));
    }
    Ok(sel)
}

/// `v1`, `v2beta3`, `v1alpha1`: the version part of kubectl-style dotted names.
fn is_k8s_version(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('v') else {
        return false;
    };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let rest = &rest[digits..];
    if rest.is_empty() {
        return true;
    }
    let rest = rest.strip_prefix("alpha").or_else(|| rest.strip_prefix("beta"));
    rest.is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()))
}

/// A human-readable form of a selector for logs: `Selector(group='apps', plural='deployments')`.
pub fn selector_text(sel: &ResourceSelector) -> String {
    let fields = [
        ("group", &sel.group),
        ("version", &sel.version),
        ("kind", &sel.kind),
        ("plural", &sel.plural),
        ("singular", &sel.singular),
        ("shortcut", &sel.shortcut),
        ("category", &sel.category),
        ("any_name", &sel.any_name),
    ];
    let mut parts: Vec<String> = fields
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v:?}")))
        .collect();
    if sel.everything {
        parts.push("any_name=EVERYTHING".into());
    }
    format!("Selector({})", parts.join(", "))
}

/// One compiled glob of a namespace pattern.
#[derive(Debug, Clone)]
struct Glob {
    negated: bool,
    matcher: Option<GlobMatcher>,
    literal: String,
}

impl Glob {
    fn matches(&self, name: &str) -> bool {
        match &self.matcher {
            Some(m) => m.is_match(name),
            None => self.literal == name,
        }
    }
}

/// The parts of `-n` values as given on the command line: each value may hold several
/// comma-separated patterns; blanks around them and empty parts are dropped.
pub fn namespace_parts(values: &[String]) -> impl Iterator<Item = &str> {
    values
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|part| !part.is_empty())
}

/// A namespace pattern as in `kopf run -n`: comma-separated globs (`*`, `?`, `[...]`),
/// `!` for exclusion; a leading exclusion implies a preceding `*`. The first glob does the
/// initial match; later inclusive globs only re-include names that the first one matched.
#[derive(Debug, Clone)]
pub struct NamespacePattern {
    text: String,
    globs: Vec<Glob>,
}

impl NamespacePattern {
    /// Compile a pattern. Globs that globset cannot compile (e.g. an unclosed `[`) match
    /// literally, as Python's `fnmatch` does.
    pub fn new(pattern: &str) -> Self {
        let mut parts: Vec<&str> = pattern.split(',').map(str::trim).collect();
        if parts.first().is_none_or(|g| g.starts_with('!')) {
            parts.insert(0, "*");
        }
        let globs = parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let negated = i > 0 && part.starts_with('!');
                let body = if negated {
                    part.trim_start_matches('!')
                } else {
                    part
                };
                let matcher = GlobBuilder::new(body)
                    .literal_separator(false)
                    .backslash_escape(false)
                    .empty_alternates(false)
                    .build()
                    .ok()
                    .map(|g| g.compile_matcher());
                Glob {
                    negated,
                    matcher,
                    literal: body.to_owned(),
                }
            })
            .collect();
        Self {
            text: pattern.to_owned(),
            globs,
        }
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a namespace name matches (Kopf's `match_namespace`).
    pub fn matches(&self, name: &str) -> bool {
        let Some((first, rest)) = self.globs.split_first() else {
            return false;
        };
        let first_match = first.matches(name);
        let mut matches = first_match;
        for glob in rest {
            if glob.negated {
                matches = matches && !glob.matches(name);
            } else {
                matches = matches || (first_match && glob.matches(name));
            }
        }
        matches
    }

    /// Whether the pattern is a plain namespace name (no globs, commas or negations), usable
    /// directly when namespaces cannot be observed (Kopf's `select_specific_namespaces`).
    pub fn specific_name(&self) -> Option<&str> {
        let t = self.text.as_str();
        (!t.contains(['!', '*', '?', ','])).then_some(t)
    }
}

/// Whether a namespace matches any of the patterns.
pub fn match_namespaces(name: &str, patterns: &[NamespacePattern]) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

/// Validates the syntax of a namespace pattern (`kopf run -n`, `kopf rbac -n`): comma-separated parts, each an optional `!`
/// and a namespace name that may contain the globs `*`, `?` and `[...]`.
pub fn parse_namespace_pattern(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err("a namespace pattern must not be empty".to_owned());
    }
    for part in value.split(',') {
        let part = part.trim();
        let name = part.strip_prefix('!').unwrap_or(part);
        if name.is_empty() {
            return Err(format!("empty namespace pattern part in {value:?}"));
        }
        if let Some(bad) = name.chars().find(|c| {
            !(c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, '-' | '.' | '*' | '?' | '[' | ']' | '!'))
        }) {
            return Err(format!(
                "invalid character {bad:?} in namespace pattern {part:?} \
                 (namespaces are lowercase letters, digits and '-'; globs: * ? [...]; negation: a leading !)"
            ));
        }
        if name.matches('[').count() != name.matches(']').count() {
            return Err(format!("unbalanced brackets in namespace pattern {part:?}"));
        }
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_patterns() {
        assert!(parse_namespace_pattern("default").is_ok());
        assert!(parse_namespace_pattern("ns-*,!ns-secret,dev?").is_ok());
        assert!(parse_namespace_pattern("").is_err());
        assert!(parse_namespace_pattern("a,,b").is_err());
        assert!(parse_namespace_pattern("Bad").is_err());
        assert!(parse_namespace_pattern("!").is_err());
        assert!(parse_namespace_pattern("ns[ab").is_err());
    }

    fn res(group: &str, version: &str, plural: &str, preferred: bool) -> Resource {
        Resource {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: "K".into(),
            singular: "k".into(),
            preferred,
            ..Default::default()
        }
    }

    #[test]
    fn core_wins_and_ambiguity() {
        let all = [
            res("", "v1", "pods", true),
            res("metrics.k8s.io", "v1beta1", "pods", true),
        ];
        let sel = ResourceSelector {
            any_name: Some("pods".into()),
            ..Default::default()
        };
        assert_eq!(select(&sel, &all), vec![&all[0]]);
        let both = [
            res("a.com", "v1", "things", true),
            res("b.com", "v1", "things", true),
        ];
        let sel = ResourceSelector {
            plural: Some("things".into()),
            ..Default::default()
        };
        assert!(matches!(
            resolve(&sel, &both),
            Err(ReferenceError::Ambiguous { .. })
        ));
    }

    #[test]
    fn urls() {
        let mut r = res("", "v1", "pods", true);
        r.namespaced = true;
        assert_eq!(
            r.url(Some("ns"), Some("p"), Some("status")),
            "/api/v1/namespaces/ns/pods/p/status"
        );
        assert_eq!(r.url(None, None, None), "/api/v1/pods");
        let c = res("kopf.dev", "v1", "clusterkopfpeerings", true);
        assert_eq!(
            c.url(Some("ns"), Some("default"), None),
            "/apis/kopf.dev/v1/clusterkopfpeerings/default"
        );
    }

    #[test]
    fn namespace_globs() {
        let p = NamespacePattern::new("myapp-*, !*-pr-*, *pr-123");
        assert!(p.matches("myapp-test"));
        assert!(p.matches("myapp-pr-123"));
        assert!(!p.matches("myapp-pr-456"));
        assert!(!p.matches("otherapp-pr-123"));
        assert_eq!(NamespacePattern::new("default").specific_name(), Some("default"));
    }
}
