//! Which objects this replica may work on (`kopf run --sharding`): the assignment of
//! objects to the live members of a ring, and the gate the multiplexer asks.
//!
//! Every replica computes the assignment from the same input (the sorted member
//! identities) with the same stable hash, so all agree without talking to each other.
//! Objects hash (by `namespace/name`) into a fixed number of slots; the slots are
//! assigned by consistent hashing with bounded loads: each slot goes to the first member
//! clockwise from the slot's point on a ring of virtual points that still has capacity
//! (`ceil(SLOTS / members)`), so members own equal numbers of slots.
//! The protocol that changes the assignment without overlap is in `peering::sharding`
//! and `docs/scale-out.md`.

use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::Value;

/// The slots objects hash into: enough that slot sizes average out over objects.
pub const SLOTS: usize = 4096;
/// Virtual points per member on the ring.
const POINTS: u64 = 64;

/// FNV-1a: a stable 64-bit hash (std's hasher may change between Rust releases, and every
/// replica, of any build, must hash alike).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The stable hash of a text (the same in every replica and build).
pub fn hash(text: &str) -> u64 {
    mix(fnv1a(text.as_bytes()))
}

/// The key an object is assigned by: `namespace/name` (stable across re-creation, and
/// present in every event of the object, deletions included).
pub fn object_key(body: &Value) -> Option<String> {
    let meta = body.get("metadata")?;
    let name = meta.get("name").and_then(Value::as_str)?;
    let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
    Some(format!("{namespace}/{name}"))
}

/// The slot of an object key.
pub fn slot_of(key: &str) -> usize {
    // Lossless: SLOTS fits in u64 and the remainder fits in usize.
    (hash(key) % SLOTS as u64) as usize
}

/// A view of the ring: its members (sorted, unique) and a short, stable id of it, which
/// members publish to acknowledge the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    members: Vec<String>,
    id: String,
}

impl View {
    /// The view of these member identities (in any order, duplicates ignored).
    pub fn new<I: IntoIterator<Item = String>>(members: I) -> Self {
        let mut members: Vec<String> = members.into_iter().collect();
        members.sort();
        members.dedup();
        let id = format!("{:016x}", hash(&members.join("\n")));
        Self { members, id }
    }

    /// The members, sorted.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The view's id (a hash of the members).
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Slot owners of a view: index into [`View::members`] per slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    view: View,
    owners: Vec<u16>,
}

impl Assignment {
    /// Assigns the slots to the view's members (none if the view is empty or larger than
    /// a ring can be).
    pub fn compute(view: &View) -> Option<Self> {
        let n = view.members.len();
        if n == 0 || n > usize::from(u16::MAX) {
            return None;
        }
        let mut ring: Vec<(u64, u16)> = Vec::with_capacity(n * POINTS as usize);
        for (index, member) in view.members.iter().enumerate() {
            let index = u16::try_from(index).ok()?;
            ring.extend((0..POINTS).map(|point| (hash(&format!("{member}#{point}")), index)));
        }
        ring.sort_unstable();
        let capacity = SLOTS.div_ceil(n);
        let mut load = vec![0_usize; n];
        let mut owners = Vec::with_capacity(SLOTS);
        for slot in 0..SLOTS {
            let at = hash(&format!("slot#{slot}"));
            let start = ring.partition_point(|(point, _)| *point < at);
            // Some member always has capacity left: n * capacity >= SLOTS.
            let owner = (0..ring.len())
                .map(|step| ring[(start + step) % ring.len()].1)
                .find(|&owner| load[usize::from(owner)] < capacity)?;
            load[usize::from(owner)] += 1;
            owners.push(owner);
        }
        Some(Self {
            view: view.clone(),
            owners,
        })
    }

    /// The view this assignment is of.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// The member owning an object key.
    pub fn owner(&self, key: &str) -> &str {
        let index = self.owners[slot_of(key)];
        &self.view.members[usize::from(index)]
    }
}

#[derive(Debug, Default)]
struct GateState {
    /// `--sharding` is in force: objects outside the assignment are not ours.
    enabled: bool,
    /// This replica's identity in the ring.
    me: String,
    /// The assignment this replica works under; `None` while it has none (it owns
    /// nothing then: fail closed).
    assignment: Option<Arc<Assignment>>,
}

/// The gate where watch events enter the multiplexer: lets through only the objects this
/// replica owns. Without `--sharding` it lets everything through. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ShardGate {
    state: Arc<RwLock<GateState>>,
}

impl ShardGate {
    /// Turns sharding on for the member `me`; it owns nothing until [`Self::assign`].
    pub fn enable(&self, me: &str) {
        let mut state = self.state.write();
        state.enabled = true;
        me.clone_into(&mut state.me);
        state.assignment = None;
    }

    /// Sets (or with `None` withdraws) the assignment this replica works under. Only
    /// changed while the reactor is stopped (see `peering::sharding`).
    pub fn assign(&self, assignment: Option<Arc<Assignment>>) {
        self.state.write().assignment = assignment;
    }

    /// Whether an object (its body, as any event carries it) is this replica's to handle.
    pub fn owns(&self, body: &Value) -> bool {
        let state = self.state.read();
        if !state.enabled {
            return true;
        }
        match (&state.assignment, object_key(body)) {
            (Some(assignment), Some(key)) => assignment.owner(&key) == state.me,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(names: &[&str]) -> View {
        View::new(names.iter().map(|n| (*n).to_owned()))
    }

    fn counts(assignment: &Assignment, keys: &[String]) -> Vec<usize> {
        let members = assignment.view().members();
        members
            .iter()
            .map(|m| keys.iter().filter(|k| assignment.owner(k) == m).count())
            .collect()
    }

    #[test]
    fn views_are_order_independent_and_ids_differ() {
        assert_eq!(view(&["b", "a", "a"]), view(&["a", "b"]));
        assert_ne!(view(&["a", "b"]).id(), view(&["a", "b", "c"]).id());
        assert_eq!(view(&["a"]).id().len(), 16);
    }

    #[test]
    fn hashes_are_stable_across_builds() {
        // Replicas of different builds must agree: these values are part of the protocol.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(slot_of("default/x"), slot_of("default/x"));
        assert_eq!(view(&["a", "b"]).id(), format!("{:016x}", hash("a\nb")));
    }

    #[test]
    fn slots_are_balanced_and_objects_nearly() {
        // Enough objects that chance (a binomial spread) stays well under the bound.
        let keys: Vec<String> = (0..12_000).map(|i| format!("default/obj-{i}")).collect();
        for n in 1..=5 {
            let names: Vec<String> = (0..n).map(|i| format!("replica-{i}")).collect();
            let assignment = Assignment::compute(&View::new(names)).unwrap();
            let mut slots = vec![0; n];
            for owner in &assignment.owners {
                slots[usize::from(*owner)] += 1;
            }
            assert!(slots.iter().all(|s| *s <= SLOTS.div_ceil(n)), "{slots:?}");
            let objects = counts(&assignment, &keys);
            let busiest = *objects.iter().max().unwrap() as f64;
            assert!(busiest <= 1.1 * 12_000.0 / n as f64, "{n}: {objects:?}");
        }
    }

    #[test]
    fn a_joining_member_takes_slots_mostly_from_others_not_reshuffles() {
        let three = Assignment::compute(&view(&["a", "b", "c"])).unwrap();
        let four = Assignment::compute(&view(&["a", "b", "c", "d"])).unwrap();
        let keys: Vec<String> = (0..3000).map(|i| format!("ns/o{i}")).collect();
        let moved = keys
            .iter()
            .filter(|k| four.owner(k) != "d" && four.owner(k) != three.owner(k))
            .count();
        // Only a joiner's share should move; bounded loads move a little more.
        assert!(moved < keys.len() / 4, "{moved} moved between old members");
    }

    #[test]
    fn the_gate_fails_closed_without_an_assignment() {
        let gate = ShardGate::default();
        let body = json!({"metadata": {"name": "x", "namespace": "default"}});
        assert!(gate.owns(&body), "no sharding: everything passes");
        gate.enable("a");
        assert!(!gate.owns(&body), "sharding without an assignment owns nothing");
        gate.assign(Assignment::compute(&view(&["a"])).map(Arc::new));
        assert!(gate.owns(&body));
        assert!(!gate.owns(&json!({})), "no name: not ours");
        let two = Assignment::compute(&view(&["a", "b"])).unwrap();
        gate.assign(Some(Arc::new(two.clone())));
        assert_eq!(gate.owns(&body), two.owner("default/x") == "a");
    }
}
