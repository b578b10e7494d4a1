//! Tests of per-object processing (`processing.rs`).
use super::*;
use crate::clients::watching::EventType;

#[test]
fn events_waiting_for_the_indices_coalesce_to_the_newest() {
    let event = |kind: Option<EventType>, version: &str| {
        RawEvent::new(
            kind,
            json!({"metadata": {"name": "a", "resourceVersion": version}}),
        )
    };
    let mut pending: Vec<RawEvent> = (1..=100)
        .map(|v| event(Some(EventType::Modified), &v.to_string()))
        .collect();
    pending.insert(0, event(None, "0"));
    coalesce(&mut pending);
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].resource_version(), Some("100"));
    assert_eq!(pending[0].event_type, None, "a listed object stays listed");
    assert!(pending[0].has_seen("0") && pending[0].has_seen("57"));
}

#[test]
fn throttle_pauses_follow_the_error_delays_with_bounded_jitter() {
    let settings = OperatorSettings::default();
    let why = Stall::Filters(FilterError {
        handler: "h".into(),
        message: "panicked".into(),
    });
    for errors in 0..8 {
        let expected = Delays::from_seconds(&settings.queueing.error_delays).after(errors as u32);
        let pauses: Vec<_> = (0..50).map(|_| throttle_pause(&settings, errors, &why)).collect();
        for (base, pause) in &pauses {
            assert_eq!(*base, expected);
            assert!(*pause >= expected && *pause <= expected.mul_f64(1.0 + THROTTLE_JITTER));
        }
        // Objects failing together do not retry in lockstep.
        assert!(pauses.iter().any(|(_, p)| *p != pauses[0].1), "{pauses:?}");
    }
}

/// A processor of no handlers, on a client whose requests go nowhere: what `process`
/// decides about states is seen in the memory.
fn bare_processor() -> ResourceProcessor {
    let settings = OperatorSettings::default();
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
    let shared = Shared {
        client: kube::Client::try_from(config).expect("a client"),
        plugins: crate::plugin::PluginSet::default(),
        progress: crate::persistence::storages::progress_storage(&settings.persistence).expect("storage"),
        diffbase: crate::persistence::storages::diffbase_storage(&settings.persistence).expect("storage"),
        settings,
        stops: Arc::default(),
        exiting: tokio_util::sync::CancellationToken::new(),
        indices: Arc::default(),
        readiness: Arc::default(),
        metrics: crate::observability::metrics::Metrics::default(),
    };
    ResourceProcessor::new(Arc::new(shared), Resource::default(), &[])
}

fn state(version: &str) -> Value {
    json!({"metadata": {"name": "a", "namespace": "ns", "uid": "uid-a", "resourceVersion": version}})
}

// Issue 18 #11: while the echo of our own patch (version 12) is awaited, a re-list after a
// watch restart (the echo compacted away) lists the object at version 15, someone else's
// change. It is newer than our patch: processed at once, not discarded as "older than our
// memory" (before: dropped, and the worker woke at the consistency deadline with the
// patched body, so the change was never handled until the next event). An older listed
// state (11) is still skipped.
#[tokio::test]
async fn a_newer_listed_state_is_processed_while_our_echo_is_awaited() {
    let processor = bare_processor();
    let mut memory = ObjectMemory::default();
    let mut body = state("10");
    super::super::memory::adopt_patched(&mut memory, &mut body, state("12"), &processor.shared.settings);
    assert!(memory.awaited.is_some());

    processor
        .process(
            &mut memory,
            vec![RawEvent::new(None, state("11"))],
            Wakeup::Events,
        )
        .await;
    assert_eq!(
        memory.known_version.as_deref(),
        Some("12"),
        "older than our patch: skipped"
    );
    assert!(memory.awaited.is_some(), "the echo is still awaited");

    processor
        .process(
            &mut memory,
            vec![RawEvent::new(None, state("15"))],
            Wakeup::Events,
        )
        .await;
    assert_eq!(
        memory.known_version.as_deref(),
        Some("15"),
        "the listed state was discarded"
    );
    assert!(
        memory.awaited.is_none(),
        "no echo is awaited once a newer state is seen"
    );
}
