//! The conformance suite every [`StateStore`] backend must pass.
//!
//! Each case is written once against `&dyn StateStore` and instantiated for
//! every backend by `conformance!`: in process, a single Redis and a Redis
//! Cluster. The Redis cases run against real servers (see `store::testing`),
//! each under its own key prefix.

use std::time::Duration;

use bytes::Bytes;
use store::{
    AppendOutcome, ApplyOutcome, HistoryLimits, LIVE_CHANNEL, LeaderboardReplace, LogAppend, MemoryStore,
    Ranked, RedisStore, ScoreApply, ScoreIncrement, StateStore, StreamEntry, WriteFormat, testing,
};

/// How long a subscriber waits for a message that should arrive.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(5);

async fn ping_succeeds(store: &dyn StateStore) {
    store.ping().await.expect("ping");
    // Every part of a healthy store answers (a cluster's every partition).
    assert_eq!(store.reach().await.expect("reach"), store::Reach::All);
}

async fn missing_key_reads_as_none(store: &dyn StateStore) {
    assert_eq!(store.get("never-written").await.expect("get"), None);
}

async fn set_then_get_returns_the_value(store: &dyn StateStore) {
    store.set("topic:1", Bytes::from_static(b"{\"score\":2}")).await.expect("set");
    assert_eq!(store.get("topic:1").await.expect("get"), Some(Bytes::from_static(b"{\"score\":2}")));
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
    let mut first = store.subscribe("topic:a").await.expect("subscribe");
    store.publish("topic:b", Bytes::from_static(b"b")).await.expect("publish");
    store.publish("topic:a", Bytes::from_static(b"a")).await.expect("publish");
    let message = tokio::time::timeout(DELIVERY_DEADLINE, first.next())
        .await
        .expect("message arrives in time")
        .expect("subscription still open");
    assert_eq!(message, Bytes::from_static(b"a"));
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
        stream_entry: Bytes::from(format!("feed {log} {seq}")),
    }
}

async fn appends_apply_in_sequence(store: &dyn StateStore) {
    for seq in 1..=3 {
        assert_eq!(store.append(&entry("m1", seq), LIMITS).await.expect("append"), AppendOutcome::Applied);
    }
    assert_eq!(store.log_state("m1").await.expect("state"), Some((3, Bytes::from("state of m1 at 3"))));
    assert_eq!(store.stream_len().await.expect("feed"), 3);
}

async fn replays_and_gaps_change_nothing(store: &dyn StateStore) {
    store.append(&entry("m1", 1), LIMITS).await.expect("append");
    store.append(&entry("m1", 2), LIMITS).await.expect("append");
    let mut live = store.subscribe(LIVE_CHANNEL).await.expect("subscribe");

    let replay = LogAppend { state: Bytes::from("tampered"), ..entry("m1", 1) };
    assert_eq!(store.append(&replay, LIMITS).await.expect("append"), AppendOutcome::Duplicate { head: 2 });
    assert_eq!(store.append(&entry("m1", 5), LIMITS).await.expect("append"), AppendOutcome::Gap { head: 2 });

    assert_eq!(store.log_state("m1").await.expect("state"), Some((2, Bytes::from("state of m1 at 2"))));
    assert_eq!(store.stream_len().await.expect("feed"), 2);
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

async fn states_of_several_logs_come_back_in_order(store: &dyn StateStore) {
    store.append(&entry("a", 1), LIMITS).await.expect("append");
    store.append(&entry("b", 1), LIMITS).await.expect("append");
    store.append(&entry("b", 2), LIMITS).await.expect("append");
    let logs = ["b".to_owned(), "nope".to_owned(), "a".to_owned()];
    let states = store.log_states_of(&logs).await.expect("states");
    assert_eq!(
        states,
        vec![Some((2, Bytes::from("state of b at 2"))), None, Some((1, Bytes::from("state of a at 1")))]
    );
    assert_eq!(store.log_states_of(&[]).await.expect("empty"), vec![]);
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
    assert_eq!(store.stream_len().await.expect("feed"), 12);
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

/// An update that closes around its state, as the gateway writes them: the
/// state is the entry's tail.
fn update(log: &str, seq: u64) -> LogAppend {
    let state = format!("{{\"log\":\"{log}\",\"seq\":{seq}}}");
    let entry = Bytes::from(format!("{{\"type\":\"event\",\"state\":{state}}}"));
    LogAppend {
        state: entry.slice(entry.len() - 1 - state.len()..entry.len() - 1),
        entry,
        ..self::entry(log, seq)
    }
}

async fn a_state_inside_its_entry_is_stored_whole(store: &dyn StateStore) {
    // Updates and plain entries mixed, logs interleaved, in one batch.
    let batch = [update("u1", 1), entry("u2", 1), update("u1", 2), update("u2", 2), entry("u1", 3)];
    let outcomes = store.append_batch(&batch, LIMITS).await.expect("batch");
    assert!(outcomes.iter().all(|o| *o == AppendOutcome::Applied), "{outcomes:?}");
    assert_eq!(store.log_state("u1").await.expect("state"), Some((3, Bytes::from("state of u1 at 3"))));
    assert_eq!(store.log_state("u2").await.expect("state"), Some((2, update("u2", 2).state)));
    let history = store.read_log("u1", 0, 10).await.expect("read").entries;
    assert_eq!(history[1], (2, update("u1", 2).entry), "the entry is stored whole, its state in it");

    // A state that is the tail of its entry but for the last byte only.
    let state = Bytes::from_static(b"ab");
    let near = LogAppend { entry: Bytes::from_static(b"xab"), state: state.clone(), ..entry("u3", 1) };
    store.append(&near, LIMITS).await.expect("append");
    assert_eq!(store.log_state("u3").await.expect("state"), Some((1, state)));
    let empty = LogAppend { state: Bytes::new(), ..entry("u4", 1) };
    store.append(&empty, LIMITS).await.expect("append");
    assert_eq!(store.log_state("u4").await.expect("state"), Some((1, Bytes::new())));
}

async fn an_entry_holding_a_newline_is_refused_and_nothing_is_written(store: &dyn StateStore) {
    let broken = LogAppend { entry: Bytes::from_static(b"two\nlines"), ..entry("n1", 2) };
    let err = store.append_batch(&[entry("n1", 1), broken], LIMITS).await.expect_err("two lines");
    assert!(err.to_string().contains("newline"), "{err}");
    assert_eq!(store.log_state("n1").await.expect("state"), None, "nothing of the batch was written");
    assert_eq!(store.stream_len().await.expect("feed"), 0);
}

async fn large_interleaved_batches_keep_each_logs_order(store: &dyn StateStore) {
    // Three logs taking turns, more appends than one script call takes.
    let batch: Vec<LogAppend> =
        (1..=100).flat_map(|seq| ["i1", "i2", "i3"].map(|log| entry(log, seq))).collect();
    let outcomes = store.append_batch(&batch, LIMITS).await.expect("batch");
    assert!(outcomes.iter().all(|o| *o == AppendOutcome::Applied), "{outcomes:?}");
    for log in ["i1", "i2", "i3"] {
        let slice = store.read_log(log, 0, 1_000).await.expect("read");
        let seqs: Vec<u64> = slice.entries.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>(), "history of {log}");
        assert_eq!(
            store.log_state(log).await.expect("state"),
            Some((100, Bytes::from(format!("state of {log} at 100"))))
        );
    }
    let feed = store.read_stream(None, 1_000).await.expect("feed").entries;
    let order: Vec<(String, u64)> = feed.iter().map(|e| (e.log.clone(), e.seq)).collect();
    let expected: Vec<(String, u64)> = batch.iter().map(|a| (a.log.clone(), a.seq)).collect();
    // Each log's order, not the order between logs: Redis groups a call's
    // appends by log, and a cluster's stream is partitioned.
    for log in ["i1", "i2", "i3"] {
        let of = |all: &[(String, u64)]| all.iter().filter(|(l, _)| l == log).cloned().collect::<Vec<_>>();
        assert_eq!(of(&order), of(&expected), "the feed holds each append of {log} once, in order");
    }
    assert_eq!(order.len(), expected.len());

    // The same batch again: every append a duplicate, nothing added.
    let again = store.append_batch(&batch, LIMITS).await.expect("batch");
    assert!(again.iter().all(|o| *o == AppendOutcome::Duplicate { head: 100 }), "{again:?}");
    assert_eq!(store.read_stream(None, 1_000).await.expect("feed").entries.len(), 300);

    // A gap in one call leaves the log where it was for the rest of the
    // batch, in this call and the next, and the other log goes on.
    let batch: Vec<LogAppend> = (101..=160)
        .flat_map(|seq| [entry("i1", if seq == 130 { 131 } else { seq }), entry("i2", seq)])
        .collect();
    let outcomes = store.append_batch(&batch, LIMITS).await.expect("batch");
    let of = |log: &str| -> Vec<AppendOutcome> {
        batch.iter().zip(&outcomes).filter(|(a, _)| a.log == log).map(|(_, o)| *o).collect()
    };
    let mut expected = vec![AppendOutcome::Applied; 29];
    expected.extend(vec![AppendOutcome::Gap { head: 129 }; 31]);
    assert_eq!(of("i1"), expected);
    assert_eq!(of("i2"), vec![AppendOutcome::Applied; 60]);
    assert_eq!(store.log_state("i1").await.expect("state").map(|(head, _)| head), Some(129));
    assert_eq!(store.log_state("i2").await.expect("state").map(|(head, _)| head), Some(160));
}

const GROUP: &str = "analytics";

/// Appends `count` events of log `log` (from seq 1) and returns nothing; the
/// feed then holds them in order.
async fn fill_stream(store: &dyn StateStore, log: &str, count: u64) {
    for seq in 1..=count {
        assert_eq!(store.append(&entry(log, seq), LIMITS).await.expect("append"), AppendOutcome::Applied);
    }
}

fn seqs(entries: &[StreamEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

/// One increment of `delta` for `member` on `board` for a feed entry.
fn apply(entry: &StreamEntry, increments: &[(&str, &str, f64)]) -> ScoreApply {
    ScoreApply {
        entry_id: entry.id.clone(),
        scope: entry.log.clone(),
        token: entry.seq.to_string(),
        increments: increments
            .iter()
            .map(|(board, member, delta)| ScoreIncrement {
                board: (*board).into(),
                member: (*member).into(),
                delta: *delta,
            })
            .collect(),
    }
}

fn ranked(rows: &[(&str, f64)]) -> Vec<Ranked> {
    rows.iter().map(|(member, score)| Ranked { member: (*member).into(), score: *score }).collect()
}

async fn the_stream_reads_in_pages(store: &dyn StateStore) {
    fill_stream(store, "f1", 5).await;
    let first = store.read_stream(None, 2).await.expect("page");
    assert_eq!(seqs(&first.entries), vec![1, 2]);
    assert_eq!(first.entries[0].log, "f1");
    assert_eq!(first.entries[0].entry, Bytes::from("feed f1 1"));
    let second = store.read_stream(first.position.as_deref(), 2).await.expect("page");
    assert_eq!(seqs(&second.entries), vec![3, 4]);
    let last = store.read_stream(second.position.as_deref(), 10).await.expect("page");
    assert_eq!(seqs(&last.entries), vec![5]);
    let end = store.read_stream(last.position.as_deref(), 10).await.expect("page");
    assert!(end.entries.is_empty());
    assert_eq!(end.position, last.position, "an empty page stays where the scan was");
}

async fn a_group_delivers_each_entry_once_until_acknowledged(store: &dyn StateStore) {
    fill_stream(store, "g1", 3).await;
    store.stream_group_create(GROUP).await.expect("create");
    store.stream_group_create(GROUP).await.expect("creating again is a no-op");
    assert_eq!(store.stream_backlog(GROUP).await.expect("backlog").lag, 3, "nothing delivered yet");

    let first = store.stream_read_group(GROUP, "a", 2, Duration::ZERO).await.expect("read");
    assert_eq!(seqs(&first), vec![1, 2]);
    assert_eq!(store.stream_backlog(GROUP).await.expect("backlog").lag, 1, "delivered entries leave the lag");
    let second = store.stream_read_group(GROUP, "b", 10, Duration::ZERO).await.expect("read");
    assert_eq!(seqs(&second), vec![3], "another consumer gets only what nobody got");
    let none = store.stream_read_group(GROUP, "a", 10, Duration::from_millis(50)).await.expect("read");
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(store.stream_backlog(GROUP).await.expect("backlog").pending, 3);
    assert_eq!(store.stream_backlog(GROUP).await.expect("backlog").lag, 0);

    let ids: Vec<String> = first.iter().chain(&second).map(|e| e.id.clone()).collect();
    assert_eq!(store.stream_ack(GROUP, &ids).await.expect("ack"), 3);
    assert_eq!(store.stream_ack(GROUP, &ids).await.expect("ack again"), 0);
    assert_eq!(store.stream_backlog(GROUP).await.expect("backlog").pending, 0);
}

async fn a_group_created_late_still_reads_from_the_start(store: &dyn StateStore) {
    fill_stream(store, "g2", 2).await;
    store.stream_group_create("late").await.expect("create");
    let entries = store.stream_read_group("late", "a", 10, Duration::ZERO).await.expect("read");
    assert_eq!(seqs(&entries), vec![1, 2]);
}

async fn reading_an_unknown_group_fails(store: &dyn StateStore) {
    fill_stream(store, "g3", 1).await;
    let err = store.stream_read_group("never-created", "a", 10, Duration::ZERO).await.expect_err("no group");
    assert!(matches!(err, store::StoreError::Backend(_)), "{err:?}");
}

async fn a_blocking_read_returns_an_entry_appended_while_it_waits(store: &dyn StateStore) {
    store.stream_group_create(GROUP).await.expect("create");
    let read = store.stream_read_group(GROUP, "a", 10, Duration::from_secs(4));
    let append = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fill_stream(store, "g4", 1).await;
    };
    let (entries, ()) = tokio::join!(read, append);
    assert_eq!(seqs(&entries.expect("read")), vec![1]);
}

async fn idle_entries_are_claimed_by_another_consumer(store: &dyn StateStore) {
    fill_stream(store, "c1", 4).await;
    store.stream_group_create(GROUP).await.expect("create");
    let taken = store.stream_read_group(GROUP, "dead", 3, Duration::ZERO).await.expect("read");
    assert_eq!(seqs(&taken), vec![1, 2, 3]);

    // Not idle long enough yet: nothing moves.
    let early = store.stream_claim(GROUP, "alive", Duration::from_secs(60), 10).await.expect("claim");
    assert!(early.is_empty(), "{early:?}");

    // Entries become claimable once idle for 30 ms.
    let deadline = tokio::time::Instant::now() + DELIVERY_DEADLINE;
    let claimed = loop {
        let claimed = store.stream_claim(GROUP, "alive", Duration::from_millis(30), 10).await.expect("claim");
        if !claimed.is_empty() {
            break claimed;
        }
        assert!(tokio::time::Instant::now() < deadline, "never claimable");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(seqs(&claimed), vec![1, 2, 3]);
    assert_eq!(claimed[0].entry, Bytes::from("feed c1 1"));
    // Claiming resets their idle time: the same call claims nothing now.
    let again = store.stream_claim(GROUP, "thief", Duration::from_secs(60), 10).await.expect("claim");
    assert!(again.is_empty(), "{again:?}");
    // The unread entry is still delivered normally.
    let rest = store.stream_read_group(GROUP, "alive", 10, Duration::ZERO).await.expect("read");
    assert_eq!(seqs(&rest), vec![4]);
    assert_eq!(store.stream_backlog(GROUP).await.expect("backlog").pending, 4);
}

async fn increments_apply_once_and_acknowledge(store: &dyn StateStore) {
    fill_stream(store, "a1", 2).await;
    store.stream_group_create(GROUP).await.expect("create");
    let entries = store.stream_read_group(GROUP, "a", 10, Duration::ZERO).await.expect("read");
    let applies = [
        apply(&entries[0], &[("total", "7", 0.25), ("topic:a1", "7", 0.25)]),
        apply(&entries[1], &[("total", "7", 0.5), ("total", "9", -0.125)]),
    ];
    let outcomes = store.apply_once(GROUP, &applies).await.expect("apply");
    assert_eq!(outcomes, vec![ApplyOutcome::Applied, ApplyOutcome::Applied]);
    assert_eq!(store.stream_backlog(GROUP).await.expect("backlog").pending, 0, "applying acknowledges");
    assert_eq!(store.leaderboard("total", 10).await.expect("board"), ranked(&[("7", 0.75), ("9", -0.125)]));
    assert_eq!(store.leaderboard("total", 1).await.expect("board"), ranked(&[("7", 0.75)]));
    assert_eq!(store.leaderboard_score("topic:a1", "7").await.expect("score"), Some(0.25));
    assert_eq!(store.leaderboard_score("topic:a1", "9").await.expect("score"), None);
    assert!(store.leaderboard("no-such-board", 10).await.expect("board").is_empty());

    // Delivered again (a claim after a crash): counted once only.
    let outcomes = store.apply_once(GROUP, &applies[..1]).await.expect("apply again");
    assert_eq!(outcomes, vec![ApplyOutcome::Duplicate]);
    assert_eq!(store.leaderboard_score("total", "7").await.expect("score"), Some(0.75));
}

async fn a_rebuild_swaps_boards_and_keeps_later_increments(store: &dyn StateStore) {
    fill_stream(store, "r1", 4).await;
    store.stream_group_create(GROUP).await.expect("create");
    let entries = store.stream_read_group(GROUP, "a", 10, Duration::ZERO).await.expect("read");
    // The stream consumer has applied entries 1 and 3 (entry 2 lags behind,
    // entry 4 arrives after the rebuild read the feed).
    store
        .apply_once(
            GROUP,
            &[apply(&entries[0], &[("total", "1", 1.0)]), apply(&entries[2], &[("total", "1", 1.0)])],
        )
        .await
        .expect("apply");
    store
        .apply_once(GROUP, &[apply(&entries[3], &[("total", "2", 4.0), ("topic:r1", "2", 4.0)])])
        .await
        .expect("apply");
    store.apply_once(GROUP, &[apply(&entries[3], &[("stale", "x", 1.0)])]).await.expect("duplicate");

    // A rebuild covering entries 1..=3 replaces the boards.
    let replace = LeaderboardReplace {
        boards: vec![
            ("total".into(), vec![("1".into(), 10.0), ("3".into(), 30.0)]),
            ("topic:r1".into(), vec![("1".into(), 10.0)]),
            ("topic:gone".into(), vec![]),
        ],
        through: Some(entries[2].id.clone()),
        fence: None,
    };
    store.apply_once(GROUP, &[apply(&entries[1], &[("other", "9", 9.0)])]).await.expect("before the swap");
    assert!(store.replace_leaderboards(&replace).await.expect("swap"));

    // Entry 4's increments, applied after what the rebuild covers, survive.
    assert_eq!(
        store.leaderboard("total", 10).await.expect("board"),
        ranked(&[("3", 30.0), ("1", 10.0), ("2", 4.0)])
    );
    assert_eq!(store.leaderboard("topic:r1", 10).await.expect("board"), ranked(&[("1", 10.0), ("2", 4.0)]));
    // A board not rebuilt is left as it was.
    assert_eq!(store.leaderboard_score("other", "9").await.expect("score"), Some(9.0));

    // An entry the rebuild covers is acknowledged but not counted again.
    fill_stream(store, "r2", 1).await;
    let late = LeaderboardReplace { through: Some(entries[2].id.clone()), ..LeaderboardReplace::default() };
    store.replace_leaderboards(&late).await.expect("no-op swap");
    let covered = ScoreApply { token: "covered".into(), ..apply(&entries[1], &[("total", "1", 100.0)]) };
    assert_eq!(store.apply_once(GROUP, &[covered]).await.expect("apply"), vec![ApplyOutcome::Rebuilt]);
    assert_eq!(store.leaderboard_score("total", "1").await.expect("score"), Some(10.0));
    // A second swap does not replay entry 4 twice.
    store.replace_leaderboards(&late).await.expect("swap again");
    assert_eq!(store.leaderboard_score("total", "2").await.expect("score"), Some(4.0));
}

async fn a_lease_has_one_holder_and_each_new_holder_a_larger_token(store: &dyn StateStore) {
    let ttl = Duration::from_secs(30);
    let first = store.acquire_lease("recompute", "a", ttl).await.expect("store").expect("free: a takes it");
    assert_eq!(store.acquire_lease("recompute", "b", ttl).await.expect("store"), None, "b took a's lease");
    assert_eq!(store.acquire_lease("recompute", "a", ttl).await.expect("store"), Some(first), "a extends it");
    assert!(store.acquire_lease("other", "b", ttl).await.expect("store").is_some(), "leases are independent");

    store.release_lease("recompute", "b").await.expect("store");
    assert_eq!(
        store.acquire_lease("recompute", "b", ttl).await.expect("store"),
        None,
        "b released a's lease"
    );
    store.release_lease("recompute", "a").await.expect("store");
    let second =
        store.acquire_lease("recompute", "b", ttl).await.expect("store").expect("released: b takes it");
    assert!(second > first, "tokens must grow: {first} then {second}");
}

async fn an_expired_lease_goes_to_the_next_holder(store: &dyn StateStore) {
    let first = store
        .acquire_lease("job", "a", Duration::from_millis(100))
        .await
        .expect("store")
        .expect("a takes it");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let second = store
        .acquire_lease("job", "b", Duration::from_secs(30))
        .await
        .expect("store")
        .expect("a stopped extending: b takes it");
    assert!(second > first);
    assert_eq!(store.acquire_lease("job", "a", Duration::from_secs(30)).await.expect("store"), None);
}

async fn a_swap_under_an_older_lease_token_changes_nothing(store: &dyn StateStore) {
    let fenced = |token: u64, score: f64| LeaderboardReplace {
        boards: vec![("fenced".into(), vec![("p".into(), score)])],
        through: None,
        fence: Some(store::Fence { lease: "recompute".into(), token }),
    };
    assert!(store.replace_leaderboards(&fenced(2, 2.0)).await.expect("swap"));
    // A holder that lost the lease (token 1) finishes late.
    assert!(!store.replace_leaderboards(&fenced(1, 1.0)).await.expect("refused"), "a stale holder swapped");
    assert_eq!(store.leaderboard_score("fenced", "p").await.expect("score"), Some(2.0));
    assert!(store.replace_leaderboards(&fenced(3, 3.0)).await.expect("swap"));
    assert_eq!(store.leaderboard_score("fenced", "p").await.expect("score"), Some(3.0));
}
async fn a_consumer_rereads_its_own_pending_entries(store: &dyn StateStore) {
    fill_stream(store, "o1", 3).await;
    store.stream_group_create(GROUP).await.expect("create");
    let mine = store.stream_read_group(GROUP, "me", 2, Duration::ZERO).await.expect("read");
    let theirs = store.stream_read_group(GROUP, "other", 10, Duration::ZERO).await.expect("read");
    assert_eq!((seqs(&mine), seqs(&theirs)), (vec![1, 2], vec![3]));

    // A round that failed acknowledged nothing: its consumer reads the same
    // entries again at once, and only its own.
    let again = store.stream_read_pending(GROUP, "me", 10).await.expect("own pending");
    assert_eq!(again, mine);
    let one = store.stream_read_pending(GROUP, "me", 1).await.expect("own pending");
    assert_eq!(seqs(&one), vec![1], "at most count, oldest first");
    assert_eq!(store.stream_ack(GROUP, &[mine[0].id.clone()]).await.expect("ack"), 1);
    let rest = store.stream_read_pending(GROUP, "me", 10).await.expect("own pending");
    assert_eq!(seqs(&rest), vec![2]);
    assert!(store.stream_read_pending(GROUP, "nobody", 10).await.expect("own pending").is_empty());
    // Reading again is not a new delivery.
    assert_eq!(store.stream_backlog(GROUP).await.expect("backlog"), store::Backlog { lag: 0, pending: 2 });
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
                states_of_several_logs_come_back_in_order,
                history_is_bounded_in_length,
                batches_report_each_outcome,
                large_interleaved_batches_keep_each_logs_order,
                a_state_inside_its_entry_is_stored_whole,
                an_entry_holding_a_newline_is_refused_and_nothing_is_written,
                the_stream_reads_in_pages,
                a_group_delivers_each_entry_once_until_acknowledged,
                a_group_created_late_still_reads_from_the_start,
                reading_an_unknown_group_fails,
                a_blocking_read_returns_an_entry_appended_while_it_waits,
                idle_entries_are_claimed_by_another_consumer,
                a_consumer_rereads_its_own_pending_entries,
                increments_apply_once_and_acknowledge,
                a_rebuild_swaps_boards_and_keeps_later_increments,
                a_lease_has_one_holder_and_each_new_holder_a_larger_token,
                an_expired_lease_goes_to_the_next_holder,
                a_swap_under_an_older_lease_token_changes_nothing,
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

async fn cluster_store() -> Option<RedisStore> {
    let config = testing::cluster_config().await?;
    Some(RedisStore::connect_cluster_lazy(&config).expect("valid test config"))
}

conformance!(memory, memory_store());
conformance!(redis, redis_store());
conformance!(redis_cluster, cluster_store());

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
async fn a_write_refused_midway_leaves_the_appends_before_it_whole() {
    let Some(store) = redis_store().await else { return };
    // The history of w2 is not a stream: its append's XADD is refused.
    store.set("log:w2", Bytes::from_static(b"in the way")).await.expect("set");
    let batch = [entry("w1", 1), entry("w1", 2), entry("w2", 1), entry("w1", 3)];
    let mut live = store.subscribe(LIVE_CHANNEL).await.expect("subscribe");
    store.append_batch(&batch, LIMITS).await.expect_err("w2's history is in the way");

    // The call takes w1's appends first (grouped by log): they are whole,
    // and published; w2's refused append wrote nothing.
    assert_eq!(store.log_state("w1").await.expect("state"), Some((3, Bytes::from("state of w1 at 3"))));
    assert_eq!(store.read_log("w1", 0, 10).await.expect("read").entries.len(), 3);
    assert_eq!(store.log_state("w2").await.expect("state"), None);
    assert_eq!(events_in_stream(&store).await, 3);
    let message = tokio::time::timeout(DELIVERY_DEADLINE, live.next()).await.expect("in time").expect("open");
    let published: Vec<Bytes> = store::live_entries(&message).collect();
    assert_eq!(published, ["w1#1", "w1#2", "w1#3"].map(Bytes::from));

    // Out of the way, the same batch again: w1's are duplicates.
    store.delete("log:w2").await.expect("delete");
    let outcomes = store.append_batch(&batch, LIMITS).await.expect("batch");
    assert_eq!(
        outcomes,
        [
            AppendOutcome::Duplicate { head: 3 },
            AppendOutcome::Duplicate { head: 3 },
            AppendOutcome::Applied,
            AppendOutcome::Duplicate { head: 3 }
        ]
    );
    assert_eq!(store.log_state("w1").await.expect("state").map(|(head, _)| head), Some(3));
    assert_eq!(events_in_stream(&store).await, 4);
}

/// The appends in the event stream, however the backend stores them.
async fn events_in_stream(store: &dyn StateStore) -> usize {
    store.read_stream(None, 100_000).await.expect("stream").entries.len()
}

/// Every message on the live channel within `DELIVERY_DEADLINE`, until
/// `entries` entries have come.
async fn live_messages(live: &mut store::Subscription, entries: usize) -> Vec<Bytes> {
    let mut messages = Vec::new();
    let mut seen = 0;
    while seen < entries {
        let message =
            tokio::time::timeout(DELIVERY_DEADLINE, live.next()).await.expect("in time").expect("open");
        seen += store::live_entries(&message).count();
        messages.push(message);
    }
    messages
}

#[tokio::test]
async fn newer_formats_publish_updates_joined_and_the_oldest_one_message_per_append() {
    let cases = [
        (WriteFormat::V3, false),
        (WriteFormat::V2, false),
        (WriteFormat::V1, false),
        (WriteFormat::V3, true),
    ];
    for (format, cluster) in cases {
        let store = if cluster {
            let Some(config) = testing::cluster_config().await else { continue };
            // One partition: the whole batch is one call.
            let config = store::ClusterConfig { partitions: 1, write_format: format, ..config };
            RedisStore::connect_cluster_lazy(&config).expect("valid test config")
        } else {
            let Some(config) = testing::redis_config().await else { return };
            RedisStore::connect_lazy(&store::RedisConfig { write_format: format, ..config })
                .expect("valid test config")
        };
        let mut live = store.subscribe(LIVE_CHANNEL).await.expect("subscribe");
        let batch = [update("f1", 1), update("f2", 1), update("f1", 2)];
        store.append_batch(&batch, LIMITS).await.expect("batch");
        let messages = live_messages(&mut live, 3).await;
        let expected: Vec<Bytes> =
            [&batch[0], &batch[2], &batch[1]].iter().map(|a| a.entry.clone()).collect();
        match format {
            WriteFormat::V2 => assert_eq!(messages.len(), 1, "one message for the call: {messages:?}"),
            // A message per run: f1's two appends, then f2's.
            WriteFormat::V3 => assert_eq!(messages.len(), 2, "one message per run: {messages:?}"),
            WriteFormat::V1 => {
                assert_eq!(messages, expected, "one message per append, as older releases read")
            }
        }
        let entries: Vec<Bytes> = messages.iter().flat_map(store::live_entries).collect();
        assert_eq!(entries, expected, "each entry once, whole, grouped by log in each log's order");
    }
}

/// Stores of one prefix writing `formats`, on one server and on a cluster.
async fn stores_writing(formats: &[WriteFormat]) -> Vec<Vec<RedisStore>> {
    let mut sets = Vec::new();
    if let Some(config) = testing::redis_config().await {
        let open =
            |write_format| RedisStore::connect_lazy(&store::RedisConfig { write_format, ..config.clone() });
        sets.push(formats.iter().map(|&format| open(format).expect("valid test config")).collect());
    }
    if let Some(config) = testing::cluster_config().await {
        let open = |write_format| {
            RedisStore::connect_cluster_lazy(&store::ClusterConfig { write_format, ..config.clone() })
        };
        sets.push(formats.iter().map(|&format| open(format).expect("valid test config")).collect());
    }
    sets
}

/// A rolling upgrade of the history: a log written in turns by a release on
/// format 2 (an entry per append) and one on format 3 (an entry per run of
/// a call), read whole and from every sequence number by both, with runs
/// that start below the head and histories trimmed across both forms.
#[tokio::test]
async fn histories_written_in_the_old_and_the_new_format_read_as_one() {
    for stores in stores_writing(&[WriteFormat::V2, WriteFormat::V3]).await {
        let (old, new) = (&stores[0], &stores[1]);
        let run =
            |from: u64, to: u64| -> Vec<LogAppend> { (from..=to).map(|seq| update("h1", seq)).collect() };
        assert_eq!(old.append_batch(&run(1, 3), LIMITS).await.expect("old"), [AppendOutcome::Applied; 3]);
        assert_eq!(new.append_batch(&run(4, 7), LIMITS).await.expect("new"), [AppendOutcome::Applied; 4]);
        // A run that starts below the head: its first two are duplicates,
        // the rest is stored without them.
        let overlapping = new.append_batch(&run(6, 10), LIMITS).await.expect("overlapping");
        let mut expected = vec![AppendOutcome::Duplicate { head: 7 }; 2];
        expected.extend([AppendOutcome::Applied; 3]);
        assert_eq!(overlapping, expected);
        assert_eq!(old.append(&update("h1", 11), LIMITS).await.expect("old"), AppendOutcome::Applied);
        // A run that starts beyond head + 1 is a gap throughout.
        let gap = new.append_batch(&run(13, 14), LIMITS).await.expect("gap");
        assert_eq!(gap, [AppendOutcome::Gap { head: 11 }; 2]);

        for reader in [old, new] {
            for after in 0..=11 {
                let slice = reader.read_log("h1", after, 100).await.expect("read");
                let expected: Vec<(u64, Bytes)> =
                    (after + 1..=11).map(|seq| (seq, update("h1", seq).entry)).collect();
                assert_eq!(slice.entries, expected, "after {after}");
                assert_eq!((slice.head, slice.oldest), (11, Some(1)));
                assert!(slice.is_complete_after(after));
            }
            // A limit counts appends, not stored entries.
            let limited = reader.read_log("h1", 4, 2).await.expect("read");
            assert_eq!(limited.entries.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [5, 6]);
        }
        assert_eq!(new.log_state("h1").await.expect("state"), Some((11, update("h1", 11).state)));
        let fed = new.read_stream(None, 100).await.expect("stream").entries;
        let fed: Vec<u64> = fed.iter().filter(|e| e.log == "h1").map(|e| e.seq).collect();
        assert_eq!(fed, (1..=11).collect::<Vec<_>>(), "each append in the event stream once");

        // Trimmed to the last five appends by sequence number: a run is
        // kept whole, so a history keeps at least five, and a read says
        // what it holds.
        let limits = HistoryLimits { max_entries: 5, ..LIMITS };
        let seqs = |slice: &store::LogSlice| slice.entries.iter().map(|(seq, _)| *seq).collect::<Vec<_>>();
        new.append_batch(&run(12, 14), limits).await.expect("new");
        let slice = new.read_log("h1", 0, 100).await.expect("read");
        assert_eq!(seqs(&slice), (8..=14).collect::<Vec<_>>(), "the run 8..10 stays whole");
        assert_eq!(slice.oldest, Some(8));
        new.append_batch(&run(15, 17), limits).await.expect("new");
        assert_eq!(seqs(&new.read_log("h1", 0, 100).await.expect("read")), (12..=17).collect::<Vec<_>>());
        old.append(&update("h1", 18), limits).await.expect("old");
        let slice = old.read_log("h1", 0, 100).await.expect("read");
        assert_eq!(seqs(&slice), (12..=18).collect::<Vec<_>>(), "format 2 trims by sequence number too");
        assert!(!slice.is_complete_after(10) && slice.is_complete_after(11));
    }
}

/// From format 3 a run of one log's appends in one call is one stream
/// entry: read, applied and acknowledged together, each append still
/// applied once by its own token, and a rebuild through the entry covers
/// them all.
#[tokio::test]
async fn appends_stored_together_are_read_and_acknowledged_together() {
    for stores in stores_writing(&[WriteFormat::V3]).await {
        let store = &stores[0];
        let batch = [entry("t1", 1), entry("t1", 2), entry("t1", 3), entry("t2", 1)];
        store.append_batch(&batch, LIMITS).await.expect("batch");
        assert_eq!(store.stream_len().await.expect("len"), 2, "a run of t1 and t2's one append");
        store.stream_group_create(GROUP).await.expect("create");
        let mut read = Vec::new();
        while read.iter().map(Vec::len).sum::<usize>() < 4 {
            let entries = store.stream_read_group(GROUP, "a", 1, Duration::ZERO).await.expect("read");
            assert!(!entries.is_empty(), "read {read:?} so far");
            read.push(entries);
        }
        let run = read.iter().find(|entries| entries[0].log == "t1").expect("t1's run");
        assert_eq!(seqs(run), [1, 2, 3], "one read of one entry brings the whole run");
        assert!(run.iter().all(|e| e.id == run[0].id), "under one id");
        assert_eq!(run[1].entry, batch[1].stream_entry);

        // The consumer dies before applying anything: the claim brings the
        // run again, whole, and applying it acknowledges it.
        let claimed = store.stream_claim(GROUP, "b", Duration::ZERO, 1).await.expect("claim");
        let claimed: Vec<StreamEntry> = claimed.into_iter().filter(|e| e.log == "t1").collect();
        assert_eq!(seqs(&claimed), [1, 2, 3]);
        let applies: Vec<ScoreApply> = claimed.iter().map(|e| apply(e, &[("total", "7", 1.0)])).collect();
        let outcomes = store.apply_once(GROUP, &applies).await.expect("apply run");
        assert_eq!(outcomes, [ApplyOutcome::Applied; 3]);
        let t2: Vec<ScoreApply> =
            read.iter().flatten().filter(|e| e.log == "t2").map(|e| apply(e, &[])).collect();
        store.apply_once(GROUP, &t2).await.expect("apply t2");
        assert_eq!(store.stream_backlog(GROUP).await.expect("backlog").pending, 0);
        // Delivered again: each append a duplicate by its own token.
        let outcomes = store.apply_once(GROUP, &applies).await.expect("apply again");
        assert_eq!(outcomes, [ApplyOutcome::Duplicate; 3]);
        assert_eq!(
            store.leaderboard_score("total", "7").await.expect("score"),
            Some(3.0),
            "each append once"
        );
    }
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
    let err = store.reach().await.expect_err("none of it answers: an error, not a partial reach");
    assert!(matches!(err, store::StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn a_refused_password_is_retried_once_redis_accepts_it_again() {
    let Some(mut redis) =
        testing::ThrowawayRedis::start(&["--save", "", "--appendonly", "no", "--requirepass", "right"])
    else {
        return;
    };
    let url = redis.url().replacen("redis://", "redis://:right@", 1);
    let config = store::RedisConfig { timeout: Duration::from_millis(500), ..store::RedisConfig::new(&url) };
    let store = RedisStore::connect_lazy(&config).expect("url is valid");
    let up = testing::eventually(Duration::from_secs(10), || async { store.ping().await.is_ok() }).await;
    assert!(up, "the throwaway server never answered");

    // Restarted with another password: ours is refused, as unavailability.
    redis.kill_and_restart_with(&["--requirepass", "other"]);
    let refused = testing::eventually(Duration::from_secs(10), || async {
        matches!(store.ping().await, Err(store::StoreError::Unavailable(msg)) if msg.contains("WRONGPASS") || msg.contains("NOAUTH") || msg.contains("uthenticat"))
    })
    .await;
    assert!(refused, "the new password never turned our credentials away");

    // Back to ours: the store recovers by itself, as after a plain restart.
    redis.kill_and_restart();
    let recovered =
        testing::eventually(Duration::from_secs(10), || async { store.ping().await.is_ok() }).await;
    assert!(recovered, "the refused password stuck: the store never tried again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_an_append_is_acknowledged_once_a_replica_holds_it() {
    let Some(cluster) = testing::ThrowawayCluster::start() else { return };
    let config = store::ClusterConfig {
        wait_replicas: 1,
        timeout: Duration::from_millis(500),
        ..store::ClusterConfig::from_settings(&cluster.urls(), "wait:", testing::TEST_PARTITIONS)
            .expect("valid")
    };
    let store = RedisStore::connect_cluster_lazy(&config).expect("config");
    assert!(first_append_held(&store, "w1").await, "a fresh cluster never acknowledged an append");

    // Its replica stops answering: the master still counts it, so the
    // append is done there but not acknowledged.
    let master = cluster.master_of(&format!("wait:{{p{}}}events", store.partition_of("w1"))).expect("master");
    let replica = cluster.replica_of(master).expect("a replica");
    cluster.pause(replica);
    let err = store.append(&entry("w1", 2), LIMITS).await.expect_err("no replica acknowledged it");
    cluster.resume(replica);
    assert!(matches!(&err, store::StoreError::Unavailable(m) if m.contains("replicas")), "{err:?}");

    // The caller's retries (the replica takes a moment to catch up) find it
    // done, and in the end held by the replica too.
    let store_ref = &store;
    let retried = testing::eventually(Duration::from_secs(10), || async move {
        store_ref.append(&entry("w1", 2), LIMITS).await == Ok(AppendOutcome::Duplicate { head: 2 })
    })
    .await;
    assert!(retried, "the retry never succeeded");
    assert_eq!(store.read_log("w1", 0, 10).await.expect("history").head, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_without_a_replica_takes_writes_without_waiting_for_one() {
    let Some(mut cluster) = testing::ThrowawayCluster::start() else { return };
    let config = store::ClusterConfig {
        wait_replicas: 1,
        timeout: Duration::from_millis(500),
        ..store::ClusterConfig::from_settings(&cluster.urls(), "alone:", testing::TEST_PARTITIONS)
            .expect("valid")
    };
    let store = RedisStore::connect_cluster_lazy(&config).expect("config");
    assert!(first_append_held(&store, "a1").await, "a fresh cluster never acknowledged an append");
    // Every master has its replica once the fresh cluster has settled.
    let store_ref = &store;
    let replicated = testing::eventually(Duration::from_secs(20), || async move {
        store_ref.reach().await == Ok(store::Reach::All)
    })
    .await;
    assert!(replicated, "a master never listed its replica: {:?}", store.reach().await);

    // Its replica dies and nothing takes its place.
    let master =
        cluster.master_of(&format!("alone:{{p{}}}events", store.partition_of("a1"))).expect("master");
    let replica = cluster.replica_of(master).expect("a replica");
    cluster.kill(replica);
    let waits_before = cluster.calls(master, "WAIT");

    // The writes go on with the durability the shard has, and after the
    // first (which learns that the master is alone) none waits for the
    // replica it does not have.
    for seq in 2..=21 {
        assert_eq!(store.append(&entry("a1", seq), LIMITS).await, Ok(AppendOutcome::Applied), "seq {seq}");
    }
    let waits = cluster.calls(master, "WAIT") - waits_before;
    assert!(waits <= 1, "{waits} WAITs sent to a master without a replica");
    assert_eq!(store.read_log("a1", 0, 100).await.expect("history").head, 21);
    // Readiness hears of it: ready, degraded, the partitions named.
    let reach = store.reach().await.expect("reach");
    assert!(matches!(reach, store::Reach::Unreplicated { partitions: 1.., of: 4 }), "{reach:?}");
}

/// Appends `log`'s first entry until a replica holds it: on a cluster just
/// started, a replica may still be taking its first copy of the master.
async fn first_append_held(store: &RedisStore, log: &str) -> bool {
    testing::eventually(Duration::from_secs(20), || async {
        matches!(
            store.append(&entry(log, 1), LIMITS).await,
            Ok(AppendOutcome::Applied | AppendOutcome::Duplicate { head: 1 })
        )
    })
    .await
}

#[tokio::test]
async fn a_cluster_consumer_holds_the_doorbell_while_idle_and_lets_it_go_while_busy() {
    let Some(config) = testing::cluster_config().await else { return };
    let store = RedisStore::connect_cluster_lazy(&config).expect("config");
    store.stream_group_create(GROUP).await.expect("create");
    // Idle: the read waits on the doorbell (a subscription to the live
    // channels), not on a poll.
    let none = store.stream_read_group(GROUP, "c", 10, Duration::from_millis(100)).await.expect("read");
    assert!(none.is_empty(), "{none:?}");
    assert!(store.doorbell_is_up().await, "an idle read set up no doorbell");

    // Busy: full batches in a row, and the subscription goes, so a busy
    // consumer is not sent every event a second time.
    fill_stream(&store, "busy", 200).await;
    for _ in 0..10 {
        let batch = store.stream_read_group(GROUP, "c", 10, Duration::ZERO).await.expect("read");
        assert_eq!(batch.len(), 10);
    }
    assert!(!store.doorbell_is_up().await, "a busy consumer kept its doorbell");

    // Idle again: back.
    store.stream_read_group(GROUP, "c", 1_000, Duration::ZERO).await.expect("read the rest");
    let none = store.stream_read_group(GROUP, "c", 10, Duration::from_millis(100)).await.expect("read");
    assert!(none.is_empty(), "{none:?}");
    assert!(store.doorbell_is_up().await, "an idle read set up no doorbell again");
}

#[tokio::test]
async fn a_store_that_never_waits_for_replicas_never_asks_for_them() {
    // Some managed Redis services refuse ROLE: readiness must not read that
    // as Redis being down unless replicas were asked for.
    let Some(redis) = testing::ThrowawayRedis::start(&["--rename-command", "ROLE", ""]) else { return };
    let mut config = store::RedisConfig::new(redis.url());
    let store = RedisStore::connect_lazy(&config).expect("config");
    assert_eq!(store.reach().await, Ok(store::Reach::All));

    // Asked for: the refusal is an error, said as such.
    config.wait_replicas = 1;
    let waiting = RedisStore::connect_lazy(&config).expect("config");
    assert!(waiting.reach().await.is_err(), "ROLE is refused, yet the store reached it");
}
