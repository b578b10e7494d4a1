//! Annotation key conventions, as Kopf's `conventions.py`: forming V1/V2 keys with
//! sanitising and blake2b hash suffixes, the `-ofDRS` mark for Deployment-owned ReplicaSets,
//! and the detection of prefixes managed by (any) Kopf-based operator.
//!
//! Lengths are counted in Unicode code points, as Python's `len(str)`.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use base64::Engine as _;
use base64::alphabet::Alphabet;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use blake2::Blake2bVar;
use blake2::digest::{Update, VariableOutput};
use parking_lot::Mutex;
use serde_json::Value;

use crate::structs::dicts;
use crate::structs::patches::Patch;

/// Kopf's default annotation prefix.
pub const DEFAULT_PREFIX: &str = "kopf.zalando.org";
/// The marker name making a custom prefix recognisable as Kopf-managed.
pub const MARKER_NAME: &str = "kopf-managed";
/// The maximum length of an annotation name (the part after `prefix/`).
pub const MAX_NAME_LENGTH: usize = 63;

/// Errors of the key conventions.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConventionError {
    /// Kopf refuses unprefixed annotation storages.
    #[error("annotations storages must be prefixed")]
    EmptyPrefix,
}

/// base64 with the altchars `-` and `.` (Python's `b64encode(altchars=b'-.')`), padded.
static B64: GeneralPurpose = GeneralPurpose::new(
    &match Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.") {
        Ok(a) => a,
        Err(_) => panic!("the base64 alphabet is valid"),
    },
    GeneralPurposeConfig::new(),
);

/// Replace the characters K8s forbids in annotation names: `/`→`.`, `<`→`_`, `>`→`_`.
pub fn make_safe_key(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '/' => '.',
            '<' | '>' => '_',
            c => c,
        })
        .collect()
}

/// The hash suffix: `-` + base64(blake2b(key, digest_size=4), altchars `-.`), with trailing
/// `=`, `-`, `.` stripped.
pub fn make_suffix(key: &str) -> String {
    let mut digest = [0u8; 4];
    // A 4-byte output is always valid for Blake2b (1..=64 bytes).
    if let Ok(mut hasher) = Blake2bVar::new(4) {
        hasher.update(key.as_bytes());
        let _ = hasher.finalize_variable(&mut digest);
    }
    let encoded = B64.encode(digest);
    let mut suffix = format!("-{encoded}");
    while suffix.ends_with(['=', '-', '.']) {
        suffix.pop();
    }
    suffix
}

/// Python's `text[:n]` for a possibly negative `n`, in code points.
fn py_head(text: &str, n: isize) -> &str {
    let len = text.chars().count() as isize;
    let n = if n < 0 { (len + n).max(0) } else { n.min(len) } as usize;
    match text.char_indices().nth(n) {
        Some((idx, _)) => &text[..idx],
        None => text,
    }
}

/// Append `-ofDRS` to keys stored on ReplicaSets owned by Deployments: Kubernetes copies a
/// Deployment's annotations onto its ReplicaSets, which would overwrite their own state.
pub fn mark_key<'a>(key: &'a str, body: &Value) -> Cow<'a, str> {
    let is_rs = body.get("kind").and_then(Value::as_str) == Some("ReplicaSet");
    let owned_by_deployment = dicts::resolve(body, &["metadata", "ownerReferences"])
        .and_then(Value::as_array)
        .is_some_and(|owners| {
            owners
                .iter()
                .any(|o| o.get("kind").and_then(Value::as_str) == Some("Deployment"))
        });
    if is_rs && owned_by_deployment {
        Cow::Owned(format!("{key}-ofDRS"))
    } else {
        Cow::Borrowed(key)
    }
}

/// The annotation prefixes managed by Kopf-based operators among these keys: prefixes with a
/// `prefix/kopf-managed` key, `kopf.zalando.org` itself, and its subdomains.
pub fn detect_marked_prefixes<'a>(keys: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
    let mut prefixes = BTreeSet::new();
    for key in keys {
        let Some((prefix, name)) = key.split_once('/') else {
            continue;
        };
        if name == MARKER_NAME
            || prefix == DEFAULT_PREFIX
            || prefix
                .strip_suffix(DEFAULT_PREFIX)
                .is_some_and(|head| head.ends_with('.'))
        {
            prefixes.insert(prefix);
        }
    }
    prefixes
}

/// Whether an annotation key falls under any of these prefixes (`prefix/...`).
pub fn has_any_prefix(key: &str, prefixes: &BTreeSet<&str>) -> bool {
    // Prefixes never contain a slash, so "starts with `prefix/`" is "the part before the
    // first slash is the prefix".
    key.split_once('/').is_some_and(|(p, _)| prefixes.contains(p))
}

/// The most record keys whose annotation keys are remembered (handler ids are few; the
/// bound only matters for sub-handlers with ids made from data).
const KEY_CACHE_LIMIT: usize = 1024;

/// Record key → its annotation keys (see [`KeyConvention`]).
type FormedKeys = HashMap<Box<str>, Arc<[String]>>;

/// Key forming for one annotation prefix (Kopf's `StorageKeyFormingConvention`).
#[derive(Debug, Clone)]
pub struct KeyConvention {
    prefix: String,
    v1: bool,
    /// Record key (after the `-ofDRS` mark) → its annotation keys: they are formed for
    /// every handler on every processing cycle, and forming them (sanitising, counting
    /// code points, hashing long keys) cost more than the lookup. Shared by clones.
    cache: Arc<Mutex<FormedKeys>>,
}

impl PartialEq for KeyConvention {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix && self.v1 == other.v1
    }
}

impl Eq for KeyConvention {}

impl KeyConvention {
    /// A convention for the prefix; `v1` also writes the legacy V1 keys (Kopf's default).
    pub fn new(prefix: &str, v1: bool) -> Result<Self, ConventionError> {
        if prefix.is_empty() {
            return Err(ConventionError::EmptyPrefix);
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            v1,
            cache: Arc::default(),
        })
    }

    /// The prefix (without the slash).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether legacy V1 keys are written too.
    pub fn v1(&self) -> bool {
        self.v1
    }

    /// The legacy V1 key: the whole key (prefix included) limited to 63 characters; the
    /// suffix is the hash of the sanitised key.
    pub fn make_v1_key(&self, key: &str) -> String {
        let safe = make_safe_key(key);
        let prefix_len = self.prefix.chars().count() as isize + 1;
        let max = MAX_NAME_LENGTH as isize;
        let suffix = if safe.chars().count() as isize <= max - prefix_len {
            String::new()
        } else {
            make_suffix(&safe)
        };
        let head = py_head(&safe, max - prefix_len - suffix.chars().count() as isize);
        format!("{}/{head}{suffix}", self.prefix)
    }

    /// The V2 key: the name part limited to 63 characters; the suffix is the hash of the raw
    /// (unsanitised) key and is added only when the raw key is longer than 63.
    pub fn make_v2_key(&self, key: &str) -> String {
        let suffix = if key.chars().count() > MAX_NAME_LENGTH {
            make_suffix(key)
        } else {
            String::new()
        };
        let limit = MAX_NAME_LENGTH.saturating_sub(suffix.chars().count()) as isize;
        let safe = make_safe_key(key);
        format!("{}/{}{suffix}", self.prefix, py_head(&safe, limit))
    }

    /// All keys to read/write for a record key, V2 first, then V1 if enabled and different.
    /// With a body, the `-ofDRS` mark is applied first.
    pub fn make_keys(&self, key: &str, body: Option<&Value>) -> Arc<[String]> {
        let key = match body {
            Some(body) => mark_key(key, body),
            None => Cow::Borrowed(key),
        };
        if let Some(keys) = self.cache.lock().get(key.as_ref()) {
            return keys.clone();
        }
        let keys: Arc<[String]> = self.form_keys(&key).into();
        let mut cache = self.cache.lock();
        if cache.len() >= KEY_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key.into(), keys.clone());
        keys
    }

    fn form_keys(&self, key: &str) -> Vec<String> {
        let v2 = self.make_v2_key(key);
        let mut keys = Vec::with_capacity(2);
        if self.v1 {
            let v1 = self.make_v1_key(key);
            keys.push(v2);
            if v1 != keys[0] {
                keys.push(v1);
            }
        } else {
            keys.push(v2);
        }
        keys
    }

    /// Put `prefix/kopf-managed: "yes"` into the patch unless the prefix starts with `kopf.`
    /// or the marker is already in the body or the patch (Kopf's `_store_marker`).
    pub fn store_marker(&self, patch: &mut Patch, body: &Value) {
        if self.prefix.starts_with("kopf.") {
            return;
        }
        let marker = format!("{}/{MARKER_NAME}", self.prefix);
        let in_body = dicts::resolve(body, &["metadata", "annotations", marker.as_str()]).is_some();
        let in_patch = patch.get(&["metadata", "annotations", marker.as_str()]).is_some();
        if !in_body && !in_patch {
            let _ = patch.set_annotation(&marker, Some("yes"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_keys_from_kopf_tests() {
        let c = KeyConvention::new("my-operator.example.com", true).unwrap();
        let x64 = "x".repeat(64);
        assert_eq!(
            c.make_v2_key(&x64),
            format!("my-operator.example.com/{}xx-SItAqA", "x".repeat(54))
        );
        let x40 = "x".repeat(40);
        assert_eq!(
            c.make_v1_key(&x40),
            format!("my-operator.example.com/{}xx-tEokcg", "x".repeat(30))
        );
        assert!(KeyConvention::new("", true).is_err());
    }

    #[test]
    fn formed_keys_are_remembered_within_a_bound() {
        let c = KeyConvention::new("kopf.zalando.org", true).unwrap();
        let long = "handler/".repeat(10);
        let first = c.make_keys(&long, None);
        assert_eq!(&*first, [c.make_v2_key(&long), c.make_v1_key(&long)]);
        assert!(Arc::ptr_eq(&first, &c.make_keys(&long, None)), "formed once");
        let rs = json!({"kind": "ReplicaSet", "metadata": {"ownerReferences": [{"kind": "Deployment"}]}});
        assert_eq!(c.make_keys("h", Some(&rs))[0], "kopf.zalando.org/h-ofDRS");
        for i in 0..KEY_CACHE_LIMIT * 2 {
            c.make_keys(&format!("h{i}"), None);
        }
        assert!(c.cache.lock().len() <= KEY_CACHE_LIMIT);
        assert_eq!(c.make_keys("h7", None)[0], "kopf.zalando.org/h7");
    }

    #[test]
    fn marks_and_markers() {
        let rs = json!({"kind": "ReplicaSet", "metadata": {"ownerReferences": [{"kind": "Deployment"}]}});
        assert_eq!(mark_key("k", &rs), "k-ofDRS");
        let keys = [
            "a.com/kopf-managed",
            "sub.kopf.zalando.org/x",
            "notkopf.zalando.org/y",
            "b/c",
        ];
        let found: Vec<_> = detect_marked_prefixes(keys).into_iter().collect();
        assert_eq!(found, vec!["a.com", "sub.kopf.zalando.org"]);
    }
}
