//! The Redis pub/sub fan-out against the shared conformance suite on the shared Redis
//! (127.0.0.1:6379): two handles on one prefix stand for two processes, each pair under a
//! prefix of its own so parallel tests and other processes never hear each other.
//! Pub/sub keeps no keys: nothing to clean up.

use std::time::Duration;

use async_trait::async_trait;
use vigia_fanout::conformance::{run_all, unique_prefix, FanoutHarness, Pair, RawChannel};
use vigia_fanout::redis::RedisChannels;
use vigia_fanout::FanoutOptions;

const ADDR: &str = "127.0.0.1:6379";

fn redis_up(test: &str) -> bool {
    vigia_core::services::service_available(&format!("redis ({test})"), ADDR)
}

struct RedisHarness;

#[async_trait]
impl FanoutHarness for RedisHarness {
    async fn pair(&self, options: &FanoutOptions) -> Pair {
        let prefix = unique_prefix("fanout");
        let url = format!("redis://{ADDR}/0?prefix={prefix}");
        let a = vigia_fanout::open(&url, options).await.expect("opening a");
        let b = vigia_fanout::open(&url, options).await.expect("opening b");
        Pair { a, b, prefix }
    }

    async fn publish_raw(&self, pair: &Pair, channel: RawChannel, bytes: &[u8]) -> bool {
        let channels = RedisChannels::new(&pair.prefix);
        let name = match channel {
            RawChannel::Live => channels.live,
            RawChannel::Control => channels.control,
        };
        let client = redis::Client::open(format!("redis://{ADDR}/0")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(&name)
            .arg(bytes)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(receivers, 2, "both handles subscribe to {name}");
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    if !redis_up("conformance") {
        return;
    }
    run_all(&RedisHarness).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_handle_is_quick_and_dropping_it_unsubscribes() {
    if !redis_up("opening_a_handle_is_quick_and_dropping_it_unsubscribes") {
        return;
    }
    let prefix = unique_prefix("drop");
    let url = format!("redis://{ADDR}/0?prefix={prefix}");
    let started = std::time::Instant::now();
    let fanout = vigia_fanout::open(&url, &FanoutOptions::default())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let live = RedisChannels::new(&prefix).live;
    assert_eq!(numsub(&live).await, 1);
    drop(fanout);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while numsub(&live).await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a dropped handle still subscribes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn numsub(channel: &str) -> i64 {
    let client = redis::Client::open(format!("redis://{ADDR}/0")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (_, count): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut conn)
        .await
        .unwrap();
    count
}
