//! Owned children waking their owners (`owns`; kube-rs's `Controller::owns`, Kopf #58).
//!
//! An event handler with `owns = "pods"` also runs for its object when a pod whose
//! `ownerReferences` name that object (by uid) changes. The owners' side remembers the
//! bodies of its objects as its watch brings them ([`ParentCache`]: no GET per wake-up);
//! the children's side ([`Owning::wake`]) runs in the child's per-object worker
//! and calls the owner's handlers with the owner as the body and the child in
//! `extra.owned`. Only event handlers take `owns`: they keep no progress records, so a
//! wake-up from a child cannot disturb a cause's records.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use kopf_abi::protocol::{HandlerKind, Invocation};
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};

use super::{queueing::RawEvent, shared::Shared};
use crate::{
    actions::{
        application::{self, Applied},
        execution,
        invocation::{self, Call},
    },
    clients::watching::{EventType, WatchItem},
    intents::filters::{self, FilterMatch, FilterSubject},
    plugin::HandlerRef,
    structs::{bodies::Body, patches::Patch, references::Resource},
};

/// Whether a handler declares owned kinds.
pub fn owns_children(handler: &HandlerRef) -> bool {
    handler.kind() == HandlerKind::Event
        && handler
            .spec()
            .options
            .owns
            .as_ref()
            .is_some_and(|o| !o.is_empty())
}

/// The newest bodies of an owner resource's objects, by uid, as its streams bring them.
#[derive(Default)]
pub struct ParentCache {
    /// uid → (the stream that brought it, its newest body).
    bodies: Mutex<HashMap<String, (String, Value)>>,
    /// The uids of each stream's listing in progress.
    listings: Mutex<HashMap<String, HashSet<String>>>,
}

impl ParentCache {
    /// Follows one item of an owner's stream.
    pub fn observe(&self, stream: &str, item: &WatchItem) {
        match item {
            WatchItem::ListStarted => {
                self.listings.lock().insert(stream.to_owned(), HashSet::new());
            }
            WatchItem::Listed(body) => {
                if let Some(uid) = Body::new(body).uid() {
                    if let Some(listing) = self.listings.lock().get_mut(stream) {
                        listing.insert(uid.to_owned());
                    }
                    self.remember(stream, uid, body);
                }
            }
            WatchItem::ListDone => {
                // Objects of this stream not in its new listing are gone.
                let listed = self.listings.lock().remove(stream).unwrap_or_default();
                self.bodies
                    .lock()
                    .retain(|uid, (from, _)| from != stream || listed.contains(uid));
            }
            WatchItem::Event(kind, body) => {
                let Some(uid) = Body::new(body).uid() else { return };
                if *kind == EventType::Deleted {
                    self.bodies.lock().remove(uid);
                } else {
                    self.remember(stream, uid, body);
                }
            }
        }
    }

    fn remember(&self, stream: &str, uid: &str, body: &Value) {
        self.bodies
            .lock()
            .insert(uid.to_owned(), (stream.to_owned(), body.clone()));
    }

    /// The newest body of the owner with this uid, if it exists as far as the watch knows.
    pub fn get(&self, uid: &str) -> Option<Value> {
        self.bodies.lock().get(uid).map(|(_, body)| body.clone())
    }
}

/// An owner resource whose handlers own a child resource.
pub struct OwnerLink {
    /// The owner resource.
    pub resource: Resource,
    /// Its objects' newest bodies.
    pub parents: Arc<ParentCache>,
    /// Its event handlers that own the child resource.
    pub handlers: Vec<HandlerRef>,
}

/// A processor's part in `owns`: as an owner (its objects are remembered) and as a child
/// (its objects' changes wake their owners).
pub struct Owning {
    /// The processor's event handlers that declare owned kinds.
    handlers: Vec<HandlerRef>,
    parents: Option<Arc<ParentCache>>,
    owners: RwLock<Vec<OwnerLink>>,
    /// The processor has no handlers of its own: it serves only to wake owners.
    only_owners: bool,
}

impl Owning {
    /// The part of a processor serving `handlers`.
    pub fn new(handlers: &[HandlerRef]) -> Self {
        let owning: Vec<HandlerRef> = handlers.iter().filter(|h| owns_children(h)).cloned().collect();
        Self {
            parents: (!owning.is_empty()).then(|| Arc::new(ParentCache::default())),
            handlers: owning,
            owners: RwLock::new(Vec::new()),
            only_owners: handlers.is_empty(),
        }
    }

    /// The processor's event handlers that declare owned kinds.
    pub fn handlers(&self) -> &[HandlerRef] {
        &self.handlers
    }

    /// The owners' cache, when this resource's handlers own children.
    pub fn parents(&self) -> Option<Arc<ParentCache>> {
        self.parents.clone()
    }

    /// Adds an owner resource to wake (once per owner resource and handler set).
    pub fn link(&self, link: OwnerLink) {
        let mut owners = self.owners.write();
        let ids = |l: &OwnerLink| l.handlers.iter().map(|h| h.id().to_owned()).collect::<Vec<_>>();
        if !owners
            .iter()
            .any(|o| o.resource == link.resource && ids(o) == ids(&link))
        {
            owners.push(link);
        }
    }

    /// Whether any owner resource is woken by this resource's objects.
    pub fn has_owners(&self) -> bool {
        !self.owners.read().is_empty()
    }

    /// Follows one item of this resource's stream (as an owner).
    pub fn observe(&self, stream: &str, item: &WatchItem) {
        if let Some(parents) = &self.parents {
            parents.observe(stream, item);
        }
    }

    /// Runs the owners' handlers for each child event; errors are logged and ignored
    /// (as for event handlers), owners that are gone are skipped. `true` when the
    /// processor serves nothing but this.
    pub async fn wake(&self, shared: &Shared, child: &Resource, events: &[RawEvent]) -> bool {
        if !self.has_owners() {
            return false;
        }
        for event in events {
            for (link, parent) in self.owners_of(&event.body) {
                let span = crate::observability::objects::object_span(&parent);
                let owned = owned_info(child, event);
                tracing::Instrument::instrument(wake_one(shared, &link, parent, owned), span).await;
            }
        }
        self.only_owners
    }

    /// The owners (link and body) a child's `ownerReferences` name, as far as known.
    fn owners_of(&self, child: &Value) -> Vec<(OwnerLinkView, Value)> {
        let Some(refs) = child
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
        else {
            return Vec::new();
        };
        let owners = self.owners.read();
        let mut found = Vec::new();
        for uid in refs.iter().filter_map(|r| r.get("uid").and_then(Value::as_str)) {
            for link in owners.iter() {
                if let Some(parent) = link.parents.get(uid) {
                    found.push((OwnerLinkView::of(link), parent));
                }
            }
        }
        found
    }
}

/// What a wake-up needs of an [`OwnerLink`] (taken out of the lock).
struct OwnerLinkView {
    resource: Resource,
    handlers: Vec<HandlerRef>,
}

impl OwnerLinkView {
    fn of(link: &OwnerLink) -> Self {
        Self {
            resource: link.resource.clone(),
            handlers: link.handlers.clone(),
        }
    }
}

/// The child as the handler sees it (`ctx.owned()`).
fn owned_info(child: &Resource, event: &RawEvent) -> Value {
    let body = Body::new(&event.body);
    json!({
        "type": event.event_type.map(EventType::as_str),
        "apiVersion": event.body.get("apiVersion"),
        "kind": event.body.get("kind"),
        "plural": child.plural,
        "name": body.name(),
        "namespace": body.namespace(),
        "body": event.body,
    })
}

/// Runs one owner's handlers for one child event, and applies their patches to the owner.
async fn wake_one(shared: &Shared, link: &OwnerLinkView, parent: Value, owned: Value) {
    let mut inv = Invocation {
        body: Some(parent.clone()),
        resource: Some(link.resource.info()),
        ..Default::default()
    };
    // No event of the owner itself: its event type is none, as for a listing.
    inv.extra
        .insert("event".into(), json!({"type": null, "object": parent}));
    inv.extra.insert("owned".into(), owned);
    let subject = FilterSubject {
        body: &parent,
        essences: None,
    };
    let mut patch = Patch::new();
    for handler in &link.handlers {
        let decided = match filters::prematch(&handler.spec().filters, &subject) {
            FilterMatch::Match => Ok(true),
            FilterMatch::NoMatch => Ok(false),
            FilterMatch::NeedsCallback => invocation::check_filters(&shared.plugins, handler, &inv).await,
        };
        match decided {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::error!(target: "kopf.objects", "The owned child's change is not handled by {:?}: {error}", handler.id());
                continue;
            }
        }
        inv.param = handler.spec().options.param.clone();
        let outcome = invocation::invoke(&shared.metrics, &shared.plugins, Call::new(handler, &inv)).await;
        if let Some(error) = &outcome.error {
            tracing::warn!(target: "kopf.objects", "{} failed with an error (ignored): {}", execution::handler_name(handler.kind(), handler.id()), error.message);
        }
        application::collect(&mut patch, handler.id(), &outcome, outcome.error.is_none());
        application::collect_fns(&mut patch, handler.plugin().index(), &outcome);
    }
    if patch.is_empty() {
        return;
    }
    let applied = application::apply(&shared.client, &shared.plugins, &link.resource, &parent, &patch).await;
    // Event handlers are not retried, so a refused function is not either: the plugins
    // forget them whatever happened.
    shared.plugins.release_patch_fns(&patch.plugin_fns());
    match applied {
        Ok(Applied::Unchanged | Applied::Fresh(_) | Applied::Gone) => {}
        Ok(Applied::Conflicted(_)) => {
            tracing::warn!(target: "kopf.objects", "The owner changed while its handlers' patch was applied; the patch is dropped.");
        }
        Err(error) => {
            tracing::warn!(target: "kopf.objects", "The owner's patch failed: {}", error.describe(&link.resource));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(uid: &str) -> Value {
        json!({"metadata": {"name": uid, "uid": uid}})
    }

    #[test]
    fn owners_follow_their_streams_listings_and_deletions() {
        let cache = ParentCache::default();
        for item in [
            WatchItem::ListStarted,
            WatchItem::Listed(obj("a")),
            WatchItem::Listed(obj("b")),
        ] {
            cache.observe("s1", &item);
        }
        cache.observe("s1", &WatchItem::ListDone);
        cache.observe("s2", &WatchItem::Event(EventType::Added, obj("c")));
        assert!(cache.get("a").is_some() && cache.get("b").is_some() && cache.get("c").is_some());

        cache.observe("s1", &WatchItem::Event(EventType::Deleted, obj("a")));
        assert!(cache.get("a").is_none(), "deleted: nobody to wake");

        // A re-listing of s1 without b: b left while the watch was down; s2's c stays.
        cache.observe("s1", &WatchItem::ListStarted);
        cache.observe("s1", &WatchItem::ListDone);
        assert!(cache.get("b").is_none());
        assert!(cache.get("c").is_some());
    }
}
