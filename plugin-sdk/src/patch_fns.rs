//! Kopf's `patch.fns` (Kopf 1.44): functions that transform the object's body, sent as a
//! JSON patch (RFC 6902) guarded by a `test` of the `resourceVersion`.
//!
//! ```
//! #[kopf::on::create("kopfexamples")]
//! fn create_fn(ctx: &kopf::Context) -> kopf::Result<()> {
//!     // Kopf: patch.fns.append(fn) — what a merge patch cannot say: append to a list.
//!     ctx.patch().fns().push(|body: &mut serde_json::Value| {
//!         if let Some(items) = body["spec"]["items"].as_array_mut() {
//!             items.push("added".into());
//!         }
//!     });
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! As in Kopf, the functions run when the operator patches the object, after the merge
//! patches, on the freshest body (the last patch response); the difference they make is
//! sent as `application/json-patch+json`, body and `/status` apart, each led by
//! `{"op": "test", "path": "/metadata/resourceVersion", "value": <that body's>}`. If the
//! object changed meanwhile (the test fails, 422), the functions are kept and applied again
//! on the re-read body in the next cycle. They may be called more than once, so they must
//! only look at the body they get. Functions of sub-handlers join their parent's, in the
//! order they were added.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::runtime::{QuietPanics, panic_message};

/// One body transformation.
pub(crate) type BodyFn = Arc<dyn Fn(&mut Value) + Send + Sync>;

/// The transformations of a patch (Kopf's `patch.fns`); see [the module](self).
#[derive(Clone, Default)]
pub struct PatchFns(Vec<BodyFn>);

impl PatchFns {
    /// Adds a transformation (Kopf's `patch.fns.append(fn)`): it gets the object's body to
    /// change in place.
    pub fn push<F>(&mut self, f: F)
    where
        F: Fn(&mut Value) + Send + Sync + 'static,
    {
        self.0.push(Arc::new(f));
    }

    /// How many transformations there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Moves the transformations of `other` after these.
    pub(crate) fn append(&mut self, other: &mut PatchFns) {
        self.0.append(&mut other.0);
    }

    /// Applies them to `body` in order, here (as the host would; for unit tests).
    pub fn apply(&self, body: &mut Value) {
        for f in &self.0 {
            f(body);
        }
    }
}

impl fmt::Debug for PatchFns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PatchFns({} functions)", self.0.len())
    }
}

impl PartialEq for PatchFns {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

/// The functions the host may still apply, by token.
static KEPT: Mutex<BTreeMap<u64, BodyFn>> = Mutex::new(BTreeMap::new());
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

fn kept() -> std::sync::MutexGuard<'static, BTreeMap<u64, BodyFn>> {
    KEPT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps the functions for the host; returns their tokens, in order.
pub(crate) fn keep(fns: PatchFns) -> Vec<u64> {
    let mut kept = kept();
    fns.0
        .into_iter()
        .map(|f| {
            let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
            kept.insert(token, f);
            token
        })
        .collect()
}

#[derive(Deserialize)]
struct Request {
    op: String,
    #[serde(default)]
    fns: Vec<u64>,
    #[serde(default)]
    body: Value,
}

/// The control method `patch.fns`: apply or release kept functions.
pub(crate) fn control(payload: &str) -> Result<String, String> {
    let request: Request =
        serde_json::from_str(payload).map_err(|e| format!("bad patch.fns payload: {e}"))?;
    match request.op.as_str() {
        "apply" => apply(&request.fns, request.body).map(|body| json!({ "body": body }).to_string()),
        "release" => {
            let mut kept = kept();
            let released = request.fns.iter().filter(|t| kept.remove(t).is_some()).count();
            Ok(json!({ "released": released }).to_string())
        }
        other => Err(format!("unknown patch.fns op {other:?}")),
    }
}

fn apply(tokens: &[u64], mut body: Value) -> Result<Value, String> {
    for token in tokens {
        let f = kept()
            .get(token)
            .cloned()
            .ok_or_else(|| format!("no patch function {token} (released already?)"))?;
        let _quiet = QuietPanics::enter();
        catch_unwind(AssertUnwindSafe(|| f(&mut body)))
            .map_err(|p| format!("a patch function panicked: {}", panic_message(p.as_ref())))?;
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_functions_apply_in_order_until_released() {
        let mut fns = PatchFns::default();
        fns.push(|b: &mut Value| b["spec"]["list"] = json!([1]));
        fns.push(|b: &mut Value| {
            if let Some(list) = b["spec"]["list"].as_array_mut() {
                list.push(json!(2));
            }
        });
        let tokens = keep(fns);
        let payload = json!({"op": "apply", "fns": tokens, "body": {"spec": {}}}).to_string();
        let answer: Value = serde_json::from_str(&control(&payload).unwrap()).unwrap();
        assert_eq!(answer["body"], json!({"spec": {"list": [1, 2]}}));
        let release = json!({"op": "release", "fns": tokens}).to_string();
        assert_eq!(control(&release).unwrap(), r#"{"released":2}"#);
        assert!(control(&payload).unwrap_err().contains("released already"));
    }

    #[test]
    fn a_panicking_function_is_an_error() {
        let mut fns = PatchFns::default();
        fns.push(|_: &mut Value| panic!("boom"));
        let tokens = keep(fns);
        let payload = json!({"op": "apply", "fns": tokens, "body": {}}).to_string();
        assert!(control(&payload).unwrap_err().contains("boom"));
    }
}
