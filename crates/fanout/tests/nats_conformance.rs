//! The core NATS fan-out against the shared conformance suite on the shared NATS
//! (127.0.0.1:4222): two handles on one prefix stand for two processes, each pair under a
//! prefix of its own so parallel tests and other processes never hear each other. Core
//! subjects keep nothing on the server: nothing to clean up.

use async_trait::async_trait;
use bytes::Bytes;
use vigia_fanout::conformance::{run_all, unique_prefix, FanoutHarness, Pair, RawChannel};
use vigia_fanout::nats::NatsSubjects;
use vigia_fanout::FanoutOptions;

const ADDR: &str = "127.0.0.1:4222";

fn nats_up(test: &str) -> bool {
    vigia_core::services::service_available(&format!("nats ({test})"), ADDR)
}

struct NatsHarness;

#[async_trait]
impl FanoutHarness for NatsHarness {
    async fn pair(&self, options: &FanoutOptions) -> Pair {
        let prefix = unique_prefix("fanout");
        let url = format!("nats://{ADDR}?prefix={prefix}");
        let a = vigia_fanout::open(&url, options).await.expect("opening a");
        let b = vigia_fanout::open(&url, options).await.expect("opening b");
        Pair { a, b, prefix }
    }

    async fn publish_raw(&self, pair: &Pair, channel: RawChannel, bytes: &[u8]) -> bool {
        let subjects = NatsSubjects::new(&pair.prefix);
        let subject = match channel {
            RawChannel::Live => subjects.live,
            RawChannel::Control => subjects.control,
        };
        let client = async_nats::connect(ADDR).await.unwrap();
        client
            .publish(subject, Bytes::copy_from_slice(bytes))
            .await
            .unwrap();
        client.flush().await.unwrap();
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    if !nats_up("conformance") {
        return;
    }
    run_all(&NatsHarness).await;
}
