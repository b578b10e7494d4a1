//! Tests of the multiplexer (`queueing.rs`): workers, slots, versions, restarts.
use super::*;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Notify;

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, Option<EventType>, Wakeup)>>,
}

impl ObjectProcessor for Recorder {
    type Memory = ();
    async fn process(&self, _memory: &mut (), events: Vec<RawEvent>, wakeup: Wakeup) -> Verdict {
        let mut seen = self.seen.lock();
        for event in events {
            let name = event
                .body
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            seen.push((name, event.event_type, wakeup));
        }
        Verdict::default()
    }
}

/// Multiplexes a stream into `processor`'s workers (4 slots); the stream ends when the
/// sender is dropped.
fn start<P: ObjectProcessor>(
    processor: Arc<P>,
    settings: QueueSettings,
) -> (mpsc::Sender<WatchItem>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let limit = Arc::new(Semaphore::new(4));
    (
        tx,
        tokio::spawn(multiplex("test".into(), rx, processor, settings, limit)),
    )
}

fn obj(name: &str) -> Value {
    json!({"metadata": {"name": name, "uid": format!("uid-{name}"), "namespace": "ns"}})
}

#[tokio::test]
async fn vanished_objects_get_a_synthetic_deletion_after_a_relist() {
    let recorder = Arc::new(Recorder::default());
    let (tx, task) = start(recorder.clone(), QueueSettings::default());
    for item in [
        WatchItem::ListStarted,
        WatchItem::Listed(obj("a")),
        WatchItem::Listed(obj("b")),
        WatchItem::ListDone,
        WatchItem::ListStarted,
        WatchItem::Listed(obj("a")),
        WatchItem::ListDone,
    ] {
        tx.send(item).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let done = recorder
            .seen
            .lock()
            .iter()
            .any(|(n, t, _)| n == "b" && *t == Some(EventType::Deleted));
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no synthetic deletion: {:?}",
            recorder.seen.lock()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(tx);
    task.await.unwrap();
    let seen = recorder.seen.lock();
    assert!(
        !seen
            .iter()
            .any(|(n, t, _)| n == "a" && *t == Some(EventType::Deleted))
    );
}

/// Object "slow" makes a call that only returns once "fast" was processed.
#[derive(Default)]
struct SlowAndFast {
    fast_done: Notify,
    order: Mutex<Vec<String>>,
}

impl ObjectProcessor for SlowAndFast {
    type Memory = ();
    async fn process(&self, _memory: &mut (), events: Vec<RawEvent>, _wakeup: Wakeup) -> Verdict {
        for event in events {
            let name = event.body["metadata"]["name"].as_str().unwrap_or("").to_owned();
            if name == "slow" {
                release_slot_if_slow(self.fast_done.notified()).await;
            } else {
                self.fast_done.notify_one();
            }
            self.order.lock().push(name);
        }
        Verdict::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_gives_its_worker_slot_to_other_objects() {
    let (tx, rx) = mpsc::channel(16);
    let processor = Arc::new(SlowAndFast::default());
    let limit = Arc::new(Semaphore::new(1));
    let task = tokio::spawn(multiplex(
        "test".into(),
        rx,
        processor.clone(),
        QueueSettings::default(),
        limit.clone(),
    ));
    tx.send(WatchItem::Event(EventType::Added, obj("slow")))
        .await
        .unwrap();
    tx.send(WatchItem::Event(EventType::Added, obj("fast")))
        .await
        .unwrap();
    // With one slot, "fast" runs only after "slow" gave the slot back (after
    // SLOT_HOLD_LIMIT of paused, auto-advancing time); "slow" then finishes.
    let deadline = Instant::now() + SLOT_HOLD_LIMIT * 10;
    while processor.order.lock().len() < 2 {
        assert!(Instant::now() < deadline, "stuck: {:?}", processor.order.lock());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*processor.order.lock(), ["fast", "slow"]);
    assert_eq!(
        limit.available_permits(),
        1,
        "the slot was taken back and returned"
    );
    drop(tx);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_quick_call_keeps_its_worker_slot() {
    let limit = Arc::new(Semaphore::new(1));
    let permit = limit.clone().acquire_owned().await.unwrap();
    let slot = RefCell::new(WorkerSlot {
        limit: limit.clone(),
        permit: Some(permit),
    });
    let output = SLOT
        .scope(slot, async {
            let output = release_slot_if_slow(async { 7 }).await;
            let held = SLOT.with(|slot| slot.borrow().permit.is_some());
            (output, held)
        })
        .await;
    assert_eq!(output, (7, true));
    assert_eq!(limit.available_permits(), 1);
}

#[test]
fn stubs_keep_what_a_synthetic_deletion_needs() {
    let mut body = obj("a");
    body["apiVersion"] = json!("kopf.dev/v1");
    body["kind"] = json!("KopfExample");
    body["metadata"]["resourceVersion"] = json!("1");
    body["spec"] = json!({"big": "x".repeat(1000)});
    let mut stub = Stub::of(&body);
    body["metadata"]["resourceVersion"] = json!("2");
    stub.update(&body);
    assert_eq!(
        stub.to_body(),
        json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample", "metadata":
            {"name": "a", "namespace": "ns", "uid": "uid-a", "resourceVersion": "2"}})
    );
}

#[test]
fn keys_fall_back_to_names_without_uid() {
    assert_eq!(object_key(&obj("a")).as_deref(), Some("uid-a"));
    let key = object_key(&json!({"kind": "K", "apiVersion": "v1", "metadata": {"name": "x"}})).unwrap();
    assert_eq!(key, "K//v1//x////");
    assert_eq!(object_key(&json!({})), None);
}

fn versioned(name: &str, version: &str) -> Value {
    let mut body = obj(name);
    body["metadata"]["resourceVersion"] = json!(version);
    body
}

/// Waits (with a deadline) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Remembers versions as the resource processor does: version 5 is answered by a
/// patch whose response has version 9 (which no event ever brings).
#[derive(Default)]
struct Versioned {
    /// (event version, the version the memory knew before it).
    seen: Mutex<Vec<(String, Option<String>)>>,
}

static VERSIONED_EXITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl ObjectProcessor for Versioned {
    type Memory = Option<Box<str>>;
    async fn process(&self, memory: &mut Self::Memory, events: Vec<RawEvent>, _: Wakeup) -> Verdict {
        for event in events {
            let version = event.resource_version().unwrap_or_default().to_owned();
            self.seen
                .lock()
                .push((version.clone(), memory.as_deref().map(str::to_owned)));
            *memory = Some(if version == "5" {
                "9".into()
            } else {
                version.into()
            });
        }
        Verdict::default()
    }
    fn known_version(memory: &Self::Memory) -> Option<Box<str>> {
        VERSIONED_EXITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        memory.clone()
    }
    fn remember_version(memory: &mut Self::Memory, version: Option<&str>) {
        *memory = version.map(Box::from);
    }
}

#[tokio::test(start_paused = true)]
async fn the_newest_known_version_outlives_the_worker() {
    let processor = Arc::new(Versioned::default());
    let settings = QueueSettings {
        idle_timeout: Duration::from_millis(100),
        ..QueueSettings::default()
    };
    let (tx, task) = start(processor.clone(), settings);
    let send = |version: &'static str| {
        let tx = tx.clone();
        async move {
            tx.send(WatchItem::Event(EventType::Modified, versioned("a", version)))
                .await
                .expect("multiplexing")
        }
    };
    send("5").await;
    until("the worker exits idle", || {
        VERSIONED_EXITS.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    // A late event, older than the state our patch produced: the new worker knows.
    send("7").await;
    until("the late event is processed", || processor.seen.lock().len() == 2).await;
    assert_eq!(
        *processor.seen.lock(),
        [
            ("5".to_owned(), Some("5".to_owned())),
            ("7".to_owned(), Some("9".to_owned()))
        ]
    );
    // A deletion forgets the object's version: nothing is kept of deleted objects.
    tx.send(WatchItem::Event(EventType::Deleted, versioned("a", "10")))
        .await
        .expect("multiplexing");
    // Processed (no await inside `process`): its worker has closed its mailbox too.
    until("the deletion is processed", || processor.seen.lock().len() == 3).await;
    send("3").await;
    until("the next event is processed", || processor.seen.lock().len() == 4).await;
    assert_eq!(processor.seen.lock()[3], ("3".to_owned(), Some("3".to_owned())));
    drop(tx);
    task.await.expect("no panic");
}

/// Panics on the first event of object "boom"; records everything else.
#[derive(Default)]
struct Boom {
    panicked: std::sync::atomic::AtomicBool,
    seen: Mutex<Vec<String>>,
}

impl ObjectProcessor for Boom {
    type Memory = ();
    async fn process(&self, _memory: &mut (), events: Vec<RawEvent>, wakeup: Wakeup) -> Verdict {
        if !events.is_empty() && !self.panicked.swap(true, std::sync::atomic::Ordering::SeqCst) {
            panic!("a bug in the processing");
        }
        let mut seen = self.seen.lock();
        seen.push(format!("{wakeup:?}"));
        for event in events {
            seen.push(event.resource_version().unwrap_or_default().to_owned());
        }
        Verdict::default()
    }
    fn recover(&self, _memory: &mut (), stub: Value) -> bool {
        self.seen.lock().push(format!(
            "recover {}",
            stub["metadata"]["name"].as_str().unwrap_or("?")
        ));
        true
    }
}

#[tokio::test]
async fn a_panicking_worker_is_restarted_and_its_object_processed_on() {
    let processor = Arc::new(Boom::default());
    let (tx, task) = start(processor.clone(), QueueSettings::default());
    tx.send(WatchItem::Event(EventType::Added, versioned("boom", "1")))
        .await
        .expect("multiplexing");
    until("the worker recovers", || processor.seen.lock().len() >= 2).await;
    tx.send(WatchItem::Event(EventType::Modified, versioned("boom", "2")))
        .await
        .expect("multiplexing");
    until("the next event is processed", || processor.seen.lock().len() >= 4).await;
    assert_eq!(
        *processor.seen.lock(),
        ["recover boom", "Scheduled", "Events", "2"]
    );
    drop(tx);
    task.await.expect("no panic");
}

#[tokio::test]
async fn objects_without_a_name_are_skipped() {
    let recorder = Arc::new(Recorder::default());
    let (tx, task) = start(recorder.clone(), QueueSettings::default());
    for _ in 0..3 {
        tx.send(WatchItem::Event(
            EventType::Modified,
            json!({"metadata": {"uid": "u1"}}),
        ))
        .await
        .expect("multiplexing");
    }
    tx.send(WatchItem::Event(EventType::Added, obj("named")))
        .await
        .expect("multiplexing");
    until("the named object is processed", || {
        !recorder.seen.lock().is_empty()
    })
    .await;
    drop(tx);
    task.await.expect("no panic");
    let names: Vec<_> = recorder.seen.lock().iter().map(|(n, _, _)| n.clone()).collect();
    assert_eq!(names, ["named"]);
}
