//! Server-side label selectors (`?labelSelector=`) for list and watch requests.
//!
//! Only the equality and existence forms are built (`key=value`, `key`, `!key`): what
//! Kopf's label filters (a value, `PRESENT`, `ABSENT`) can say. A requirement the API
//! server would refuse (an invalid key or value) is never built: the client-side filter
//! keeps deciding for it.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use super::bodies::Body;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LabelRequirement {
    /// `key=value`, or `key in (a,b)` for several values.
    In(String, BTreeSet<String>),
    /// `key`: the label is present.
    Exists(String),
    /// `!key`: the label is absent.
    NotExists(String),
}

impl LabelRequirement {
    /// `key=value`, if the API server accepts it (a valid label key and value).
    pub fn equals(key: &str, value: &str) -> Option<Self> {
        (is_label_key(key) && is_label_value(value))
            .then(|| Self::In(key.to_owned(), BTreeSet::from([value.to_owned()])))
    }

    /// `key`, if the key is valid.
    pub fn exists(key: &str) -> Option<Self> {
        is_label_key(key).then(|| Self::Exists(key.to_owned()))
    }

    /// `!key`, if the key is valid.
    pub fn not_exists(key: &str) -> Option<Self> {
        is_label_key(key).then(|| Self::NotExists(key.to_owned()))
    }

    /// The label key it is about.
    pub fn key(&self) -> &str {
        match self {
            Self::In(key, _) | Self::Exists(key) | Self::NotExists(key) => key,
        }
    }

    /// The weakest requirement on the same key that both imply (an object satisfying
    /// either satisfies it); `None` when there is none (the label present and absent).
    pub fn either(self, other: Self) -> Option<Self> {
        match (self, other) {
            (Self::In(key, mut a), Self::In(_, b)) => {
                a.extend(b);
                Some(Self::In(key, a))
            }
            (Self::In(key, _) | Self::Exists(key), Self::In(..) | Self::Exists(_)) => Some(Self::Exists(key)),
            (Self::NotExists(key), Self::NotExists(_)) => Some(Self::NotExists(key)),
            _ => None,
        }
    }

    fn matches(&self, body: Body<'_>) -> bool {
        let present = body.labels().is_some_and(|l| l.contains_key(self.key()));
        match self {
            Self::In(key, values) => body.label(key).is_some_and(|v| values.contains(v)),
            Self::Exists(_) => present,
            Self::NotExists(_) => !present,
        }
    }
}

impl fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::In(key, values) if values.len() == 1 => {
                write!(f, "{key}={}", values.first().map_or("", String::as_str))
            }
            Self::In(key, values) => {
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                write!(f, "{key} in ({})", values.join(","))
            }
            Self::Exists(key) => f.write_str(key),
            Self::NotExists(key) => write!(f, "!{key}"),
        }
    }
}

/// A conjunction of requirements; never empty (an empty selector is `None` at the users).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelSelector(Vec<LabelRequirement>);

impl LabelSelector {
    /// A selector of these requirements (sorted, deduplicated); `None` when there are none.
    pub fn new(requirements: impl IntoIterator<Item = LabelRequirement>) -> Option<Self> {
        let mut requirements: Vec<_> = requirements.into_iter().collect();
        requirements.sort();
        requirements.dedup();
        (!requirements.is_empty()).then_some(Self(requirements))
    }

    /// The requirements, sorted.
    pub fn requirements(&self) -> &[LabelRequirement] {
        &self.0
    }

    /// Whether the object's labels satisfy every requirement (as the API server decides).
    pub fn matches(&self, body: &Value) -> bool {
        let body = Body::new(body);
        self.0.iter().all(|r| r.matches(body))
    }
}

impl fmt::Display for LabelSelector {
    /// The `labelSelector` query value: requirements joined by commas.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

/// A qualified name: up to 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn is_qualified_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
}

/// A DNS-1123 subdomain (a label key's prefix).
fn is_dns_subdomain(prefix: &str) -> bool {
    prefix.len() <= 253
        && prefix.split('.').all(|part| {
            let bytes = part.as_bytes();
            let ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            !bytes.is_empty()
                && bytes.len() <= 63
                && bytes.first().is_some_and(ok)
                && bytes.last().is_some_and(ok)
                && bytes.iter().all(|b| ok(b) || *b == b'-')
        })
}

fn is_label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_qualified_name(name),
        None => is_qualified_name(key),
    }
}

fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_qualified_name(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_sorted_and_deduplicated() {
        let selector = LabelSelector::new([
            LabelRequirement::not_exists("skip").unwrap(),
            LabelRequirement::equals("app", "web").unwrap(),
            LabelRequirement::exists("kopf.dev/tier").unwrap(),
            LabelRequirement::equals("app", "web").unwrap(),
        ])
        .unwrap();
        assert_eq!(selector.to_string(), "app=web,kopf.dev/tier,!skip");
        assert_eq!(LabelSelector::new([]), None);
    }

    #[test]
    fn refuses_what_the_server_would_refuse() {
        assert_eq!(LabelRequirement::equals("app", "a b"), None);
        assert_eq!(LabelRequirement::equals("app", "a,b"), None);
        assert_eq!(LabelRequirement::equals("-app", "x"), None);
        assert_eq!(LabelRequirement::exists("Kopf.Dev/x"), None);
        assert_eq!(LabelRequirement::exists(""), None);
        assert!(LabelRequirement::equals("app", "").is_some());
        assert!(LabelRequirement::equals("example.com/app_name", "v1.2-x").is_some());
    }

    #[test]
    fn matches_as_the_server_does() {
        let selector = LabelSelector::new([
            LabelRequirement::equals("app", "web").unwrap(),
            LabelRequirement::not_exists("skip").unwrap(),
        ])
        .unwrap();
        assert!(selector.matches(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!selector.matches(&json!({"metadata": {"labels": {"app": "web", "skip": ""}}})));
        assert!(!selector.matches(&json!({"metadata": {"labels": {"app": "db"}}})));
        assert!(!selector.matches(&json!({"metadata": {}})));
    }

    #[test]
    fn either_is_implied_by_both() {
        let (web, db) = (
            LabelRequirement::equals("app", "web").unwrap(),
            LabelRequirement::equals("app", "db").unwrap(),
        );
        let both = web.clone().either(db).unwrap();
        assert_eq!(both.to_string(), "app in (db,web)");
        let present = LabelRequirement::exists("app").unwrap();
        assert_eq!(web.clone().either(present.clone()), Some(present.clone()));
        let absent = LabelRequirement::not_exists("app").unwrap();
        assert_eq!(absent.clone().either(absent.clone()), Some(absent.clone()));
        assert_eq!(web.either(absent.clone()), None);
        assert_eq!(absent.either(present), None);
    }
}
