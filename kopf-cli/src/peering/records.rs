//! Peer records in a peering object's `status`, and the pause decision (Kopf's
//! `process_peering_event`), as pure functions of the object and the current time.

use jiff::{Timestamp, civil::DateTime, tz::TimeZone};
use serde_json::{Map, Value, json};

/// The lifetime assumed for records without one (Kopf's default).
pub const DEFAULT_LIFETIME: i64 = 60;

/// One operator's record in a peering object.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// The key in `status`: `POD_ID` or `user@host/timestamp/random`.
    pub identity: String,
    /// The peer's priority (higher wins).
    pub priority: i64,
    /// Seconds the record stays valid after `lastseen`.
    pub lifetime: i64,
    /// When the peer last refreshed its record (`None` when unreadable: assumed "now").
    pub lastseen: Option<Timestamp>,
}

impl Peer {
    /// A fresh record of this operator, as it writes it on each keep-alive.
    pub fn own(identity: &str, priority: i64, lifetime: i64, now: Timestamp) -> Self {
        Self {
            identity: identity.to_owned(),
            priority,
            lifetime,
            lastseen: Some(now),
        }
    }

    /// When the record stops being valid. Kopf treats a missing `lastseen` as "now".
    pub fn deadline(&self, now: Timestamp) -> Timestamp {
        let seen = self.lastseen.unwrap_or(now);
        seen.checked_add(jiff::SignedDuration::from_secs(self.lifetime))
            .unwrap_or(seen)
    }

    /// Whether the record has expired (`lastseen + lifetime <= now`).
    pub fn is_dead(&self, now: Timestamp) -> bool {
        self.deadline(now) <= now
    }

    /// The record as stored: `{priority, lifetime, lastseen}` (Kopf's `Peer.as_dict`).
    pub fn as_value(&self) -> Value {
        let seen = self.lastseen.map(format_timestamp);
        json!({"priority": self.priority, "lifetime": self.lifetime, "lastseen": seen})
    }
}

/// Kopf's `datetime.isoformat()` of an aware UTC time: `2026-06-01T12:00:05.123456+00:00`.
pub fn format_timestamp(ts: Timestamp) -> String {
    ts.to_zoned(TimeZone::UTC)
        .strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

/// Parses an ISO-8601 time; a time without an offset is taken as UTC (as old Kopf wrote).
pub fn parse_timestamp(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Some(ts);
    }
    let civil: DateTime = text.parse().ok()?;
    civil.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// Reads one record; extra fields are ignored and bad fields fall back to Kopf's defaults.
fn parse_peer(identity: &str, record: &Value) -> Option<Peer> {
    let record = record.as_object()?;
    let number = |key: &str, default: i64| match record.get(key) {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or(default),
        Some(Value::String(s)) => s.trim().parse::<f64>().map(|f| f as i64).unwrap_or(default),
        _ => default,
    };
    Some(Peer {
        identity: identity.to_owned(),
        priority: number("priority", 0),
        lifetime: number("lifetime", DEFAULT_LIFETIME),
        lastseen: record
            .get("lastseen")
            .and_then(Value::as_str)
            .and_then(parse_timestamp),
    })
}

/// All records of a peering object (its `status` map), sorted by identity.
pub fn peers_of(body: &Value) -> Vec<Peer> {
    let Some(status) = body.get("status").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut peers: Vec<Peer> = status
        .iter()
        .filter_map(|(identity, record)| parse_peer(identity, record))
        .collect();
    peers.sort_by(|a, b| a.identity.cmp(&b.identity));
    peers
}

/// What an operator should do after looking at a peering object.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Pause (a live higher- or same-priority peer exists).
    pub pause: bool,
    /// Live peers with a higher priority.
    pub higher: Vec<Peer>,
    /// Live peers (other than self) with the same priority.
    pub same: Vec<Peer>,
    /// Expired records to remove.
    pub dead: Vec<Peer>,
    /// When the earliest blocking peer expires (re-evaluate then), if any blocks.
    pub recheck_at: Option<Timestamp>,
}

/// Kopf's rule: any live higher-priority peer pauses us; otherwise any live peer with
/// the same priority pauses everyone (with a warning); otherwise we run.
pub fn decide(peers: &[Peer], identity: &str, priority: i64, now: Timestamp) -> Decision {
    let dead: Vec<Peer> = peers.iter().filter(|p| p.is_dead(now)).cloned().collect();
    let live = peers.iter().filter(|p| !p.is_dead(now) && p.identity != identity);
    let higher: Vec<Peer> = live.clone().filter(|p| p.priority > priority).cloned().collect();
    let same: Vec<Peer> = live.filter(|p| p.priority == priority).cloned().collect();
    let recheck_at = higher.iter().chain(same.iter()).map(|p| p.deadline(now)).min();
    Decision {
        pause: !higher.is_empty() || !same.is_empty(),
        higher,
        same,
        dead,
        recheck_at,
    }
}

/// A merge patch writing (or, with `None`, removing) records: `{"status": {id: record|null}}`.
pub fn status_patch<'a>(records: impl IntoIterator<Item = (&'a str, Option<Value>)>) -> Value {
    let map: Map<String, Value> = records
        .into_iter()
        .map(|(id, record)| (id.to_owned(), record.unwrap_or(Value::Null)))
        .collect();
    json!({"status": map})
}

/// Short human-readable list of peers for logs: `id (priority N)`.
pub fn describe(peers: &[Peer]) -> String {
    peers
        .iter()
        .map(|p| format!("{} (priority {})", p.identity, p.priority))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn timestamps_are_kopf_isoformat_and_round_trip() {
        let t = ts("2026-06-01T12:00:05.123456Z");
        assert_eq!(format_timestamp(t), "2026-06-01T12:00:05.123456+00:00");
        assert_eq!(parse_timestamp("2026-06-01T12:00:05.123456+00:00"), Some(t));
        assert_eq!(parse_timestamp("2026-06-01T14:00:05.123456+02:00"), Some(t));
        assert_eq!(parse_timestamp("2026-06-01T12:00:05.123456"), Some(t));
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn records_parse_with_defaults_and_extras() {
        let body = json!({"status": {
            "b": {"priority": 666, "lifetime": 60, "lastseen": "2026-06-01T12:00:05+00:00", "namespace": "x"},
            "a": {"priority": 1, "lifetime": 30.0},
            "c": {},
            "junk": "not a record",
        }});
        let peers = peers_of(&body);
        assert_eq!(peers.len(), 3);
        assert_eq!(peers[0].identity, "a");
        assert_eq!(peers[0].lifetime, 30);
        assert_eq!(peers[0].lastseen, None);
        assert_eq!(peers[1].identity, "b");
        assert_eq!(peers[1].priority, 666);
        assert_eq!(peers[2].priority, 0);
        assert_eq!(peers[2].lifetime, DEFAULT_LIFETIME);
        assert!(peers_of(&json!({"status": null})).is_empty());
        assert!(peers_of(&json!({})).is_empty());
    }

    #[test]
    fn own_record_serialises_like_kopf() {
        let p = Peer::own("me", 5, 60, ts("2026-06-01T12:00:05Z"));
        assert_eq!(
            p.as_value(),
            json!({"priority": 5, "lifetime": 60, "lastseen": "2026-06-01T12:00:05.000000+00:00"})
        );
        assert_eq!(
            status_patch([("me", Some(p.as_value())), ("gone", None)]),
            json!({"status": {"me": p.as_value(), "gone": null}})
        );
    }

    #[test]
    fn death_is_lastseen_plus_lifetime() {
        let now = ts("2026-06-01T12:01:00Z");
        let alive = Peer::own("x", 0, 61, ts("2026-06-01T12:00:00Z"));
        let exact = Peer::own("x", 0, 60, ts("2026-06-01T12:00:00Z"));
        let unseen = Peer {
            lastseen: None,
            ..exact.clone()
        };
        assert!(!alive.is_dead(now));
        assert!(exact.is_dead(now));
        assert!(!unseen.is_dead(now));
    }

    #[test]
    fn higher_priority_pauses_and_lower_does_not() {
        let now = ts("2026-06-01T12:00:30Z");
        let seen = ts("2026-06-01T12:00:00Z");
        let peers = vec![
            Peer::own("me", 10, 60, seen),
            Peer::own("low", 5, 60, seen),
            Peer::own("high", 20, 45, seen),
            Peer::own("dead-high", 100, 10, seen),
        ];
        let d = decide(&peers, "me", 10, now);
        assert!(d.pause);
        assert_eq!(
            d.higher.iter().map(|p| &p.identity[..]).collect::<Vec<_>>(),
            ["high"]
        );
        assert!(d.same.is_empty());
        assert_eq!(d.dead.len(), 1);
        assert_eq!(d.recheck_at, Some(ts("2026-06-01T12:00:45Z")));

        let d = decide(&peers, "high", 20, now);
        assert!(!d.pause);
        assert_eq!(d.recheck_at, None);
    }

    #[test]
    fn same_priority_pauses_everyone_but_self_does_not_count() {
        let now = ts("2026-06-01T12:00:30Z");
        let seen = ts("2026-06-01T12:00:00Z");
        let alone = vec![Peer::own("me", 10, 60, seen)];
        assert!(!decide(&alone, "me", 10, now).pause);
        let twins = vec![Peer::own("me", 10, 60, seen), Peer::own("twin", 10, 60, seen)];
        let d = decide(&twins, "me", 10, now);
        assert!(d.pause);
        assert_eq!(d.same.len(), 1);
        assert!(d.higher.is_empty());
        let d = decide(&twins, "twin", 10, now);
        assert!(d.pause);
    }
}
