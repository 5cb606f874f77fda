//! The conformance suite every [`StateStore`] backend must pass.
//!
//! Each case is written once against `&dyn StateStore` and instantiated for
//! both backends by `conformance!`. The Redis cases run against a real server
//! (see `store::testing`), each under its own key prefix.

use std::time::Duration;

use bytes::Bytes;
use store::{MemoryStore, RedisStore, StateStore, testing};

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
