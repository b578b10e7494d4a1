//! Functions run as sub-handlers on the spot: Kopf's `await kopf.execute(fns=...)` and
//! `execute(handlers=[...])`, as [`Fns`] given to [`Context::execute_fns`].
//!
//! ```
//! fn create_a(ctx: &kopf::Context) -> kopf::Result<()> {
//!     if ctx.retry() < 2 {
//!         return Err(kopf::TemporaryError::new("not ready yet").delay(10.0).into());
//!     }
//!     Ok(())
//! }
//!
//! fn create_b(_ctx: &kopf::Context) -> kopf::Result<&'static str> {
//!     Ok("b")
//! }
//!
//! #[kopf::on::create("kopfexamples")]
//! fn create(ctx: &kopf::Context) -> kopf::Result<()> {
//!     // Kopf: await kopf.execute(fns={'a': create_a, 'b': create_b})
//!     ctx.execute_fns(kopf::fns().add("a", create_a).add("b", create_b))?;
//!     // Reached once both `create/a` and `create/b` have finished.
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! As in Kopf, the ids are the parent's id, `/`, and the key given ([`Fns::add`], Kopf's
//! `fns={'id': fn}`) or the function's name ([`Fns::named`], Kopf's `fns=[fn]`, where
//! the id is the function's `__qualname__`; a closure has no name and needs an id). The
//! functions run as the registered sub-handlers do: finished ones are not called again,
//! delayed ones wait, and while any is unfinished `execute_fns` returns
//! [`crate::ChildrenPending`]: propagate it with `?`, and the parent is called again in
//! a later cycle. The option setters ([`Fns::retries`], ...) apply to the function added
//! last: Kopf's `handlers=[...]` of handlers with options. Unlike Kopf's `handlers=`,
//! whose handler objects carry their full ids, the ids here are always relative to the
//! parent.

use kopf_abi::protocol::{ErrorsMode, HandlerOptions};
use serde::Serialize;

use crate::context::Context;
use crate::error::Error;
use crate::subhandlers::{SubFn, SubhandlerError, sync_fn};

/// One function of [`Fns`].
pub(crate) struct FnEntry {
    /// The id relative to the parent.
    pub(crate) id: String,
    pub(crate) options: HandlerOptions,
    pub(crate) func: SubFn,
}

/// Functions to run as sub-handlers now, with [`Context::execute_fns`]; start with
/// [`fns`]. See [the module](mod@crate::fns).
#[derive(Default)]
#[must_use = "functions run only when given to `ctx.execute_fns(...)`"]
pub struct Fns {
    pub(crate) entries: Vec<FnEntry>,
    /// The first mistake made while building (reported by `execute_fns`).
    pub(crate) error: Option<SubhandlerError>,
}

/// An empty set of functions; see [`Fns`].
pub fn fns() -> Fns {
    Fns::default()
}

impl Fns {
    /// Adds a function under an id (Kopf's `fns={'id': fn}`): the sub-handler's id is
    /// `<parent id>/<id>`.
    pub fn add<F, T, E>(mut self, id: impl Into<String>, f: F) -> Self
    where
        F: Fn(&Context) -> Result<T, E> + Send + Sync + 'static,
        T: Serialize,
        E: Into<Error>,
    {
        self.entries.push(FnEntry {
            id: id.into(),
            options: HandlerOptions::default(),
            func: sync_fn(f),
        });
        self
    }

    /// Adds a named function (Kopf's `fns=[fn]`): its id is the function's name, as
    /// Kopf's is its `__qualname__` (`create_a` for `fn create_a`). A closure has no name:
    /// `execute_fns` then fails with [`SubhandlerError::Unnamed`].
    pub fn named<F, T, E>(mut self, f: F) -> Self
    where
        F: Fn(&Context) -> Result<T, E> + Send + Sync + 'static,
        T: Serialize,
        E: Into<Error>,
    {
        match function_name::<F>() {
            Ok(id) => self.add(id, f),
            Err(error) => {
                self.error.get_or_insert(error);
                self
            }
        }
    }

    fn last_options(&mut self) -> Option<&mut HandlerOptions> {
        self.entries.last_mut().map(|e| &mut e.options)
    }

    /// How arbitrary errors of the last added function are treated.
    pub fn errors(mut self, mode: ErrorsMode) -> Self {
        if let Some(o) = self.last_options() {
            o.errors = Some(mode);
        }
        self
    }

    /// Seconds since the first attempt before the last added function fails permanently.
    pub fn timeout(mut self, secs: impl Into<f64>) -> Self {
        if let Some(o) = self.last_options() {
            o.timeout = Some(secs.into());
        }
        self
    }

    /// Attempts before the last added function fails permanently.
    pub fn retries(mut self, retries: u32) -> Self {
        if let Some(o) = self.last_options() {
            o.retries = Some(retries);
        }
        self
    }

    /// Seconds to wait after an arbitrary error of the last added function.
    pub fn backoff(mut self, secs: impl Into<f64>) -> Self {
        if let Some(o) = self.last_options() {
            o.backoff = Some(secs.into());
        }
        self
    }

    /// A value handed to the last added function as [`Context::param`].
    pub fn param(mut self, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).ok();
        if let Some(o) = self.last_options() {
            o.param = value;
        }
        self
    }
}

/// The name of a function item's type: its last path segment (`crate::module::create_a`
/// gives `create_a`). Closures have none.
fn function_name<F>() -> Result<String, SubhandlerError> {
    let full = std::any::type_name::<F>();
    let path = full.split('<').next().unwrap_or(full);
    let name = path.rsplit("::").next().unwrap_or(path);
    if full.contains("{{closure}}") || name.is_empty() || name.contains(['{', '&', ' ', '(']) {
        return Err(SubhandlerError::Unnamed(full.to_owned()));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create_a(_: &Context) -> crate::Result<()> {
        Ok(())
    }

    #[test]
    fn named_functions_get_their_names_and_closures_none() {
        let f = fns().named(create_a).retries(3).param("p");
        assert_eq!(f.entries[0].id, "create_a");
        assert_eq!(f.entries[0].options.retries, Some(3));
        assert_eq!(f.entries[0].options.param, Some(serde_json::json!("p")));
        assert!(f.error.is_none());
        let f = fns().named(|_: &Context| -> crate::Result<()> { Ok(()) });
        assert!(
            matches!(f.error, Some(SubhandlerError::Unnamed(_))),
            "{:?}",
            f.error
        );
        assert!(f.entries.is_empty());
    }
}
