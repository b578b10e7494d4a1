//! Which objects this replica may work on (`kopf run --sharding`): the assignment of
//! objects to the live members of a ring, and the gate the multiplexer asks.
//!
//! Every replica computes the assignment from the same input (the sorted member
//! identities) with the same stable hash, so all agree without talking to each other.
//! Objects hash (by uid, with the API server's hash of KEP-5866's sharded list/watch:
//! FNV-1a over 64 bits) into a fixed number of slots, each a contiguous range of the hash
//! space; the slots are assigned by consistent hashing with bounded loads: each slot goes
//! to the first member clockwise from the slot's start on a ring of virtual points that
//! still has capacity (`ceil(SLOTS / members)`), so members own equal numbers of slots,
//! mostly in runs, which a `shardSelector` names in few ranges ([`Assignment::selector`]).
//! The protocol that changes the assignment without overlap is in `peering::sharding`
//! and `docs/scale-out.md`.

use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::Value;

/// The slots objects hash into: enough that slot sizes average out over objects.
pub const SLOTS: usize = 1 << (64 - SLOT_SHIFT);
/// A slot is the top bits of an object's hash: `hash >> SLOT_SHIFT`.
const SLOT_SHIFT: u32 = 52;
/// Virtual points per member on the ring.
const POINTS: u64 = 64;
/// What the assignment depends on besides the members; part of every view id, so that
/// replicas that would assign differently (other builds) never agree on a view: a ring
/// of mixed versions waits (fails closed) rather than run an object twice.
const SCHEME: &str = "slots=4096;key=metadata.uid;hash=fnv1a64";

/// FNV-1a: a stable 64-bit hash (std's hasher may change between Rust releases, and every
/// replica, of any build, must hash alike); the API server's hash of shard selectors.
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

/// The stable hash of a text (the same in every replica and build), for points of
/// members and names of Leases.
pub fn hash(text: &str) -> u64 {
    mix(fnv1a(text.as_bytes()))
}

/// The key an object is assigned by: its uid (present in every event of the object,
/// deletions included, and what the API server selects by); `namespace/name` for a body
/// without one, which no API server sends (deterministic all the same).
pub fn object_key(body: &Value) -> Option<String> {
    let meta = body.get("metadata")?;
    if let Some(uid) = meta.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty()) {
        return Some(uid.to_owned());
    }
    let name = meta.get("name").and_then(Value::as_str)?;
    let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
    Some(format!("{namespace}/{name}"))
}

/// The slot of an object key: the top bits of its FNV-1a hash, as the API server
/// computes it (its high bits are FNV's well-mixed ones).
pub fn slot_of(key: &str) -> usize {
    // Lossless: the shifted value is below SLOTS.
    (fnv1a(key.as_bytes()) >> SLOT_SHIFT) as usize
}

/// Where a slot begins in the 64-bit hash space.
fn slot_start(slot: usize) -> u64 {
    // Lossless: slots are below SLOTS, 2^12.
    (slot as u64) << SLOT_SHIFT
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
        let id = format!("{:016x}", hash(&format!("{SCHEME}\n{}", members.join("\n"))));
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
            let at = slot_start(slot);
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

    /// The KEP-5866 `shardSelector` of a member's share: its runs of slots as hash ranges
    /// (`shardRange(object.metadata.uid, '0x<16 hex digits>', ...) || ...`, the only
    /// form the API server parses); `None` for a member that owns all slots or none
    /// (nothing to ask the server for: the gate filters).
    pub fn selector(&self, member: &str) -> Option<String> {
        let index = self.view.members.iter().position(|m| m == member)?;
        let mine = |slot: usize| usize::from(self.owners[slot]) == index;
        let mut ranges = Vec::new();
        let mut slot = 0;
        while slot < SLOTS {
            if !mine(slot) {
                slot += 1;
                continue;
            }
            let start = slot;
            while slot < SLOTS && mine(slot) {
                slot += 1;
            }
            let end = if slot == SLOTS {
                // 2^64, the exclusive end of the space, in the server's one 17-digit form.
                "0x10000000000000000".to_owned()
            } else {
                format!("0x{:016x}", slot_start(slot))
            };
            ranges.push(format!(
                "shardRange(object.metadata.uid, '0x{:016x}', '{end}')",
                slot_start(start)
            ));
        }
        let all = ranges.len() == 1 && self.owners.iter().all(|o| usize::from(*o) == index);
        (!ranges.is_empty() && !all).then(|| ranges.join(" || "))
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

    /// Whether `--sharding` is in force.
    pub fn is_enabled(&self) -> bool {
        self.state.read().enabled
    }

    /// Sets (or with `None` withdraws) the assignment this replica works under. Only
    /// changed while the reactor is stopped (see `peering::sharding`).
    pub fn assign(&self, assignment: Option<Arc<Assignment>>) {
        self.state.write().assignment = assignment;
    }

    /// The `shardSelector` that asks the API server for this replica's share only (see
    /// [`Assignment::selector`]); `None` without sharding or an assignment.
    pub fn server_selector(&self) -> Option<String> {
        let state = self.state.read();
        let assignment = state.assignment.as_ref().filter(|_| state.enabled)?;
        assignment.selector(&state.me)
    }

    /// Whether an object (its body, as any event carries it) is this replica's to handle.
    pub fn owns(&self, body: &Value) -> bool {
        self.ownership(body) == Ownership::Mine
    }

    /// Whose an object is, as far as this replica knows now.
    pub fn ownership(&self, body: &Value) -> Ownership {
        let state = self.state.read();
        if !state.enabled {
            return Ownership::Mine;
        }
        match (&state.assignment, object_key(body)) {
            (Some(assignment), Some(key)) if assignment.owner(&key) == state.me => Ownership::Mine,
            (Some(_), Some(_)) => Ownership::Theirs,
            // Handing over, or no key: nobody's here (fail closed).
            _ => Ownership::Unknown,
        }
    }
}

/// Whose an object is, for the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// This replica's (or `--sharding` is off).
    Mine,
    /// Another member's, under the assignment in force.
    Theirs,
    /// No assignment in force (a hand-over), or the object has no key.
    Unknown,
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

    /// Object keys shaped like the uids the API server generates.
    fn uids(count: usize) -> Vec<String> {
        (0..count)
            .map(|i| {
                let h = format!("{:016x}{:016x}", hash(&format!("a{i}")), hash(&format!("b{i}")));
                format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                )
            })
            .collect()
    }

    #[test]
    fn hashes_are_stable_across_builds_and_the_api_servers() {
        // Replicas of different builds must agree: these values are part of the protocol.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        // A uid as kube-apiserver 1.37 hashes it for `shardRange(object.metadata.uid, ...)`
        // (a namespace it listed into the range [0, 2^63) of a shardSelector).
        let uid = "26e8ef40-c911-46d6-b4cd-abf12016ba57";
        assert_eq!(fnv1a(uid.as_bytes()), 0x273e_237a_b13d_3548);
        assert_eq!(slot_of(uid), 0x273);
        assert_eq!(
            view(&["a", "b"]).id(),
            format!("{:016x}", hash(&format!("{SCHEME}\na\nb")))
        );
    }

    #[test]
    fn objects_are_keyed_by_uid_and_by_name_only_without_one() {
        let body = json!({"metadata": {"name": "x", "namespace": "ns", "uid": "u-1"}});
        assert_eq!(object_key(&body).as_deref(), Some("u-1"));
        let body = json!({"metadata": {"name": "x", "namespace": "ns", "uid": ""}});
        assert_eq!(object_key(&body).as_deref(), Some("ns/x"));
        assert_eq!(object_key(&json!({"metadata": {}})), None);
    }

    /// The hash ranges of a selector, parsed back.
    fn ranges(selector: &str) -> Vec<(u128, u128)> {
        selector
            .split(" || ")
            .map(|range| {
                let inner = range
                    .strip_prefix("shardRange(object.metadata.uid, '0x")
                    .and_then(|r| r.strip_suffix("')"))
                    .unwrap_or_else(|| panic!("not a shardRange: {range}"));
                let (start, end) = inner.split_once("', '0x").unwrap();
                // The server accepts 16 hex digits, or 17 for 2^64 exactly.
                assert!(
                    start.len() == 16 && (end.len() == 16 || end == "10000000000000000"),
                    "{range}"
                );
                (
                    u128::from_str_radix(start, 16).unwrap(),
                    u128::from_str_radix(end, 16).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn selectors_name_exactly_each_members_slots_in_few_ranges() {
        let keys = uids(3000);
        for n in 2..=4 {
            let names: Vec<String> = (0..n).map(|i| format!("replica-{i}")).collect();
            let assignment = Assignment::compute(&View::new(names.clone())).unwrap();
            let mut covered: Vec<(u128, u128)> = Vec::new();
            for name in &names {
                let selector = assignment.selector(name).unwrap();
                let mine = ranges(&selector);
                // Runs of slots, not scattered slots: a request line of a few KB.
                assert!(mine.len() <= 2 * POINTS as usize, "{n}: {} ranges", mine.len());
                assert!(selector.len() < 20_000, "{n}: {} bytes", selector.len());
                for key in &keys {
                    let point = u128::from(fnv1a(key.as_bytes()));
                    let selected = mine.iter().any(|(s, e)| *s <= point && point < *e);
                    assert_eq!(selected, assignment.owner(key) == name, "{key}");
                }
                covered.extend(mine);
            }
            covered.sort_unstable();
            assert_eq!(covered.first().map(|r| r.0), Some(0));
            assert_eq!(covered.last().map(|r| r.1), Some(1 << 64));
            assert!(covered.windows(2).all(|w| w[0].1 == w[1].0), "gaps or overlaps");
        }
        let one = Assignment::compute(&view(&["a"])).unwrap();
        assert_eq!(one.selector("a"), None, "owning everything needs no selector");
        assert_eq!(one.selector("z"), None, "not a member");
    }

    #[test]
    fn slots_are_balanced_and_objects_nearly() {
        // Enough objects that chance (a binomial spread) stays well under the bound.
        let keys = uids(12_000);
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
        let keys = uids(3000);
        let moved = keys
            .iter()
            .filter(|k| four.owner(k) != "d" && four.owner(k) != three.owner(k))
            .count();
        // Only a joiner's share should move; bounded loads move a little more.
        assert!(moved < keys.len() / 4, "{moved} moved between old members");
    }

    /// The slots of each member of a view.
    fn shares(assignment: &Assignment) -> Vec<(String, Vec<usize>)> {
        let members = assignment.view().members();
        members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let slots = (0..SLOTS)
                    .filter(|s| usize::from(assignment.owners[*s]) == i)
                    .collect();
                (m.clone(), slots)
            })
            .collect()
    }

    /// Why every member pauses on a view change (docs/scale-out.md): every member's
    /// share changes, whether a member joins or leaves.
    #[test]
    fn every_members_share_changes_when_a_member_joins_or_leaves() {
        for n in 2..=5 {
            let names: Vec<String> = (0..=n).map(|i| format!("replica-{i}")).collect();
            let small = shares(&Assignment::compute(&View::new(names[..n].to_vec())).unwrap());
            let large = shares(&Assignment::compute(&View::new(names.clone())).unwrap());
            for (member, before) in &small {
                let after = &large.iter().find(|(m, _)| m == member).unwrap().1;
                assert!(
                    before.iter().any(|s| !after.contains(s)),
                    "{n}+1: {member} loses nothing"
                );
            }
        }
    }

    /// What per-slot hand-overs would spare (docs/scale-out.md): the slots that stay with
    /// their owner when a member joins. Only the others would need to pause.
    #[test]
    fn most_slots_stay_with_their_owner_when_a_member_joins() {
        for n in 1..=5 {
            let names: Vec<String> = (0..=n).map(|i| format!("replica-{i}")).collect();
            let small = Assignment::compute(&View::new(names[..n].to_vec())).unwrap();
            let large = Assignment::compute(&View::new(names.clone())).unwrap();
            let owner = |a: &Assignment, s: usize| a.view.members[usize::from(a.owners[s])].clone();
            let kept = (0..SLOTS)
                .filter(|s| owner(&small, *s) == owner(&large, *s))
                .count();
            // The joiner's fair share must move; bounded loads move a little more.
            let fair = SLOTS * n / (n + 1);
            eprintln!(
                "{n} -> {}: {kept} of {SLOTS} slots kept (a fair move keeps {fair})",
                n + 1
            );
            assert!(kept * 10 >= fair * 9, "{n}+1: only {kept} slots kept");
        }
    }

    #[test]
    fn the_gate_fails_closed_without_an_assignment() {
        let gate = ShardGate::default();
        let body = json!({"metadata": {"name": "x", "namespace": "default", "uid": "u-x"}});
        assert!(gate.owns(&body), "no sharding: everything passes");
        assert_eq!(gate.server_selector(), None);
        gate.enable("a");
        assert!(!gate.owns(&body), "sharding without an assignment owns nothing");
        assert_eq!(gate.ownership(&body), Ownership::Unknown);
        gate.assign(Assignment::compute(&view(&["a"])).map(Arc::new));
        assert!(gate.owns(&body));
        assert!(!gate.owns(&json!({})), "no name: not ours");
        let two = Assignment::compute(&view(&["a", "b"])).unwrap();
        gate.assign(Some(Arc::new(two.clone())));
        assert_eq!(gate.owns(&body), two.owner("u-x") == "a");
        let whose = if two.owner("u-x") == "a" {
            Ownership::Mine
        } else {
            Ownership::Theirs
        };
        assert_eq!(gate.ownership(&body), whose);
        assert_eq!(gate.server_selector(), two.selector("a"));
        gate.assign(None);
        assert_eq!(gate.server_selector(), None, "no assignment: no selector");
    }
}
