//! The conformance suite every [`StateStore`] backend must pass.
//!
//! Each case is written once against `&dyn StateStore` and instantiated for
//! both backends by `conformance!`. The Redis cases run against a real server
//! (see `store::testing`), each under its own key prefix.

use std::time::Duration;

use bytes::Bytes;
use store::{
    AppendOutcome, HistoryLimits, LIVE_CHANNEL, LogAppend, MemoryStore, RedisStore, StateStore, testing,
};

/// How long a subscriber waits for a message that should arrive.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(5);

async fn ping_succeeds(store: &dyn StateStore) {
    store.ping().await.expect("ping");
}

async fn missing_key_reads_as_none(store: &dyn StateStore) {
    assert_eq!(store.get("never-written").await.expect("get"), None);
}

async fn set_then_get_returns_the_value(store: &dyn StateStore) {
    store.set("match:1", Bytes::from_static(b"{\"home\":2}")).await.expect("set");
    assert_eq!(store.get("match:1").await.expect("get"), Some(Bytes::from_static(b"{\"home\":2}")));
}

async fn set_overwrites(store: &dyn StateStore) {
    store.set("k", Bytes::from_static(b"first")).await.expect("set");
    store.set("k", Bytes::from_static(b"second")).await.expect("set");
    assert_eq!(store.get("k").await.expect("get"), Some(Bytes::from_static(b"second")));
}

async fn values_are_binary_safe(store: &dyn StateStore) {
    let value = Bytes::from((0..=255u8).collect::<Vec<_>>());
    store.set("binary", value.clone()).await.expect("set");
    assert_eq!(store.get("binary").await.expect("get"), Some(value));
}

async fn delete_reports_whether_the_key_existed(store: &dyn StateStore) {
    store.set("gone", Bytes::from_static(b"x")).await.expect("set");
    assert!(store.delete("gone").await.expect("delete"));
    assert!(!store.delete("gone").await.expect("delete again"));
    assert_eq!(store.get("gone").await.expect("get"), None);
}

async fn publish_without_subscribers_reaches_nobody(store: &dyn StateStore) {
    let receivers = store.publish("empty-channel", Bytes::from_static(b"x")).await.expect("publish");
    assert_eq!(receivers, 0);
}

async fn subscribers_receive_messages_in_publish_order(store: &dyn StateStore) {
    let mut first = store.subscribe("scores").await.expect("subscribe");
    let mut second = store.subscribe("scores").await.expect("subscribe");

    for i in 0..20u8 {
        let receivers = store.publish("scores", Bytes::from(vec![i])).await.expect("publish");
        assert_eq!(receivers, 2, "both subscriptions should receive message {i}");
    }

    for subscription in [&mut first, &mut second] {
        for i in 0..20u8 {
            let message = tokio::time::timeout(DELIVERY_DEADLINE, subscription.next())
                .await
                .expect("message arrives in time")
                .expect("subscription still open");
            assert_eq!(message, Bytes::from(vec![i]));
        }
    }
}

async fn channels_are_independent(store: &dyn StateStore) {
    let mut home = store.subscribe("match:home").await.expect("subscribe");
    store.publish("match:away", Bytes::from_static(b"away")).await.expect("publish");
    store.publish("match:home", Bytes::from_static(b"home")).await.expect("publish");
    let message = tokio::time::timeout(DELIVERY_DEADLINE, home.next())
        .await
        .expect("message arrives in time")
        .expect("subscription still open");
    assert_eq!(message, Bytes::from_static(b"home"));
}

async fn dropped_subscriptions_stop_counting(store: &dyn StateStore) {
    let subscription = store.subscribe("short-lived").await.expect("subscribe");
    drop(subscription);
    // Redis processes the unsubscribe asynchronously; poll until it lands.
    let deadline = tokio::time::Instant::now() + DELIVERY_DEADLINE;
    loop {
        let receivers = store.publish("short-lived", Bytes::from_static(b"x")).await.expect("publish");
        if receivers == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "dropped subscription still receives");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const LIMITS: HistoryLimits = HistoryLimits { max_entries: 1_000, max_idle: Duration::from_secs(60) };

fn entry(log: &str, seq: u64) -> LogAppend {
    LogAppend {
        log: log.into(),
        seq,
        entry: Bytes::from(format!("{log}#{seq}")),
        state: Bytes::from(format!("state of {log} at {seq}")),
        feed_entry: Bytes::from(format!("feed {log} {seq}")),
    }
}

async fn appends_apply_in_sequence(store: &dyn StateStore) {
    for seq in 1..=3 {
        assert_eq!(store.append(&entry("m1", seq), LIMITS).await.expect("append"), AppendOutcome::Applied);
    }
    assert_eq!(store.log_state("m1").await.expect("state"), Some((3, Bytes::from("state of m1 at 3"))));
    assert_eq!(store.feed_len().await.expect("feed"), 3);
}

async fn replays_and_gaps_change_nothing(store: &dyn StateStore) {
    store.append(&entry("m1", 1), LIMITS).await.expect("append");
    store.append(&entry("m1", 2), LIMITS).await.expect("append");
    let mut live = store.subscribe(LIVE_CHANNEL).await.expect("subscribe");

    let replay = LogAppend { state: Bytes::from("tampered"), ..entry("m1", 1) };
    assert_eq!(store.append(&replay, LIMITS).await.expect("append"), AppendOutcome::Duplicate { head: 2 });
    assert_eq!(store.append(&entry("m1", 5), LIMITS).await.expect("append"), AppendOutcome::Gap { head: 2 });

    assert_eq!(store.log_state("m1").await.expect("state"), Some((2, Bytes::from("state of m1 at 2"))));
    assert_eq!(store.feed_len().await.expect("feed"), 2);
    assert_eq!(store.read_log("m1", 0, 100).await.expect("read").entries.len(), 2);
    // Nothing was published for either: the next message is the next append.
    store.append(&entry("m1", 3), LIMITS).await.expect("append");
    let next = tokio::time::timeout(DELIVERY_DEADLINE, live.next()).await.expect("in time").expect("open");
    assert_eq!(next, Bytes::from("m1#3"));
}

async fn appends_are_published_in_order(store: &dyn StateStore) {
    let mut live = store.subscribe(LIVE_CHANNEL).await.expect("subscribe");
    for seq in 1..=5 {
        store.append(&entry("m2", seq), LIMITS).await.expect("append");
    }
    for seq in 1..=5 {
        let message =
            tokio::time::timeout(DELIVERY_DEADLINE, live.next()).await.expect("in time").expect("open");
        assert_eq!(message, Bytes::from(format!("m2#{seq}")));
    }
}

async fn history_reads_resume_after_a_sequence_number(store: &dyn StateStore) {
    for seq in 1..=10 {
        store.append(&entry("m3", seq), LIMITS).await.expect("append");
    }
    let slice = store.read_log("m3", 7, 100).await.expect("read");
    let seqs: Vec<u64> = slice.entries.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, vec![8, 9, 10]);
    assert_eq!(slice.entries[0].1, Bytes::from("m3#8"));
    assert_eq!((slice.head, slice.oldest), (10, Some(1)));
    assert!(slice.is_complete_after(7));

    let limited = store.read_log("m3", 0, 4).await.expect("read");
    assert_eq!(limited.entries.len(), 4);
    assert!(!limited.is_complete_after(0), "a limited read is not the whole history");

    let empty = store.read_log("never-written", 0, 10).await.expect("read");
    assert_eq!((empty.entries.len(), empty.head, empty.oldest), (0, 0, None));
}

async fn history_is_bounded_in_length(store: &dyn StateStore) {
    let limits = HistoryLimits { max_entries: 5, ..LIMITS };
    for seq in 1..=12 {
        store.append(&entry("m4", seq), limits).await.expect("append");
    }
    let slice = store.read_log("m4", 0, 100).await.expect("read");
    let seqs: Vec<u64> = slice.entries.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, vec![8, 9, 10, 11, 12]);
    assert!(!slice.is_complete_after(2), "entries 3..7 are gone");
    assert!(slice.is_complete_after(7));
    // The durable feed is never trimmed.
    assert_eq!(store.feed_len().await.expect("feed"), 12);
}

async fn batches_report_each_outcome(store: &dyn StateStore) {
    let batch = [entry("m5", 1), entry("m5", 2), entry("m5", 2), entry("m5", 4), entry("m6", 1)];
    let outcomes = store.append_batch(&batch, LIMITS).await.expect("batch");
    assert_eq!(
        outcomes,
        vec![
            AppendOutcome::Applied,
            AppendOutcome::Applied,
            AppendOutcome::Duplicate { head: 2 },
            AppendOutcome::Gap { head: 2 },
            AppendOutcome::Applied,
        ]
    );
    let mut states = store.log_states().await.expect("states");
    states.sort();
    assert_eq!(
        states,
        vec![("m5".into(), Bytes::from("state of m5 at 2")), ("m6".into(), Bytes::from("state of m6 at 1"))]
    );
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            conformance!(@cases $make;
                ping_succeeds,
                missing_key_reads_as_none,
                set_then_get_returns_the_value,
                set_overwrites,
                values_are_binary_safe,
                delete_reports_whether_the_key_existed,
                publish_without_subscribers_reaches_nobody,
                subscribers_receive_messages_in_publish_order,
                channels_are_independent,
                dropped_subscriptions_stop_counting,
                appends_apply_in_sequence,
                replays_and_gaps_change_nothing,
                appends_are_published_in_order,
                history_reads_resume_after_a_sequence_number,
                history_is_bounded_in_length,
                batches_report_each_outcome,
            );
        }
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some(store) = $make.await else { return };
                super::$case(&store).await;
            }
        )*
    };
}

async fn memory_store() -> Option<MemoryStore> {
    Some(MemoryStore::new())
}

async fn redis_store() -> Option<RedisStore> {
    let config = testing::redis_config().await?;
    Some(RedisStore::connect_lazy(&config).expect("valid test config"))
}

conformance!(memory, memory_store());
conformance!(redis, redis_store());

#[tokio::test]
async fn key_prefixes_isolate_redis_stores() {
    let (Some(a), Some(b)) = (testing::redis_config().await, testing::redis_config().await) else {
        return;
    };
    let a = RedisStore::connect_lazy(&a).expect("config a");
    let b = RedisStore::connect_lazy(&b).expect("config b");
    a.set("shared-name", Bytes::from_static(b"a")).await.expect("set");
    assert_eq!(b.get("shared-name").await.expect("get"), None);
}

#[tokio::test]
async fn unreachable_redis_reports_unavailable_within_the_timeout() {
    // Port 1 on loopback: nothing listens there.
    let config = store::RedisConfig {
        timeout: Duration::from_millis(300),
        ..store::RedisConfig::new("redis://127.0.0.1:1")
    };
    let store = RedisStore::connect_lazy(&config).expect("url is valid");
    let started = tokio::time::Instant::now();
    let err = store.ping().await.expect_err("nothing listens on port 1");
    assert!(matches!(err, store::StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}
