//! The in-process fan-out against the shared conformance suite: one process, so both
//! "processes" of a pair are the same handle (as every part of one process shares it).

use std::sync::Arc;

use async_trait::async_trait;
use vigia_fanout::conformance::{run_all, FanoutHarness, Pair, RawChannel};
use vigia_fanout::{FanoutOptions, InProcessFanout};

struct InProcessHarness;

#[async_trait]
impl FanoutHarness for InProcessHarness {
    async fn pair(&self, options: &FanoutOptions) -> Pair {
        let fanout = Arc::new(InProcessFanout::new(options.live_capacity));
        Pair {
            a: fanout.clone(),
            b: fanout,
            prefix: String::new(),
        }
    }

    async fn publish_raw(&self, _pair: &Pair, _channel: RawChannel, _bytes: &[u8]) -> bool {
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    run_all(&InProcessHarness).await;
}
