//! Test doubles for other crates' tests (feature `testkit`): [`FaultyBus`] wraps any bus
//! and fails, fills or slows it on demand, so the handling of a broken broker (ingest's
//! 503s, the worker pool's retries) is tested without breaking a real one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use crate::{Bus, BusError, Delivery, DeliveryToken, Message, Topic};

/// The faults currently switched on.
#[derive(Debug, Default, Clone)]
struct Faults {
    /// The publish attempt (1-based, counted since the wrapper was made) that fails.
    fail_publish_at: Option<u64>,
    broker_gone: bool,
    full: Option<Duration>,
    publish_delay: Duration,
    fail_acks: bool,
}

/// A bus that delegates to another, except where a fault is switched on.
pub struct FaultyBus {
    inner: Arc<dyn Bus>,
    faults: Mutex<Faults>,
    publishes: AtomicU64,
}

impl FaultyBus {
    /// Wraps `inner` with every fault off.
    pub fn new(inner: Arc<dyn Bus>) -> Self {
        Self {
            inner,
            faults: Mutex::new(Faults::default()),
            publishes: AtomicU64::new(0),
        }
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the `n`-th publish from now (1 = the next one) fail with `Unavailable`, once.
    pub fn fail_nth_publish(&self, n: u64) {
        let at = self
            .publishes
            .load(Ordering::SeqCst)
            .saturating_add(n.max(1));
        self.faults().fail_publish_at = Some(at);
    }

    /// The broker is gone (`true`) or back: every operation but `close` fails with
    /// `Unavailable`, as a dropped connection would.
    pub fn broker_gone(&self, gone: bool) {
        self.faults().broker_gone = gone;
    }

    /// Every publish answers `Full` with this hint (`Some`), or passes (`None`).
    pub fn force_full(&self, retry_after: Option<Duration>) {
        self.faults().full = retry_after;
    }

    /// Every publish waits this long before reaching the bus (a slow broker or disk).
    pub fn delay_publishes(&self, by: Duration) {
        self.faults().publish_delay = by;
    }

    /// Acks fail with `Unavailable` (`true`) and settle nothing, or pass.
    pub fn fail_acks(&self, fail: bool) {
        self.faults().fail_acks = fail;
    }

    /// Switches every fault off.
    pub fn heal(&self) {
        *self.faults() = Faults::default();
    }

    /// Publishes attempted through this wrapper, failed ones included.
    pub fn publish_attempts(&self) -> u64 {
        self.publishes.load(Ordering::SeqCst)
    }

    fn gone(&self) -> Result<(), BusError> {
        if self.faults().broker_gone {
            Err(BusError::Unavailable(
                "injected fault: the broker is gone".into(),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Bus for FaultyBus {
    async fn publish(&self, topic: Topic, message: Message) -> Result<(), BusError> {
        let attempt = self.publishes.fetch_add(1, Ordering::SeqCst) + 1;
        let faults = self.faults().clone();
        if !faults.publish_delay.is_zero() {
            tokio::time::sleep(faults.publish_delay).await;
        }
        self.gone()?;
        if faults.fail_publish_at == Some(attempt) {
            return Err(BusError::Unavailable(format!(
                "injected fault: publish {attempt} fails"
            )));
        }
        if let Some(retry_after) = faults.full {
            let pending = self.inner.lag(topic).await?;
            return Err(BusError::Full {
                pending,
                capacity: pending,
                retry_after,
            });
        }
        self.inner.publish(topic, message).await
    }

    async fn receive(&self, topic: Topic, max_weight: usize) -> Result<Vec<Delivery>, BusError> {
        self.gone()?;
        self.inner.receive(topic, max_weight).await
    }

    async fn ack(&self, tokens: Vec<DeliveryToken>) -> Result<(), BusError> {
        self.gone()?;
        if self.faults().fail_acks {
            return Err(BusError::Unavailable("injected fault: acks fail".into()));
        }
        self.inner.ack(tokens).await
    }

    async fn nack(&self, tokens: Vec<DeliveryToken>) -> Result<(), BusError> {
        self.gone()?;
        self.inner.nack(tokens).await
    }

    async fn reject(&self, token: DeliveryToken, reason: String) -> Result<(), BusError> {
        self.gone()?;
        self.inner.reject(token, reason).await
    }

    async fn lag(&self, topic: Topic) -> Result<u64, BusError> {
        self.gone()?;
        self.inner.lag(topic).await
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.gone()?;
        self.inner.ping().await
    }

    fn close(&self) {
        self.inner.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::conformance::{sample_batch, tag_of};
    use crate::{readings, Capacity, VolatileBus};

    fn faulty() -> FaultyBus {
        FaultyBus::new(Arc::new(VolatileBus::new(Capacity::default())))
    }

    async fn publish(bus: &FaultyBus, tag: u64) -> Result<(), BusError> {
        readings::publish(bus, sample_batch(tag, 2)).await
    }

    #[tokio::test]
    async fn the_nth_publish_fails_once_and_the_rest_pass() {
        let bus = faulty();
        publish(&bus, 0).await.unwrap();
        bus.fail_nth_publish(2);
        publish(&bus, 1).await.unwrap();
        let failed = publish(&bus, 2).await;
        assert!(
            matches!(&failed, Err(BusError::Unavailable(why)) if why.contains("publish 3")),
            "{failed:?}"
        );
        publish(&bus, 3).await.unwrap();
        assert_eq!(bus.publish_attempts(), 4);
        let got = readings::receive(&bus, 100).await.unwrap();
        let tags: Vec<u64> = got.iter().map(|r| tag_of(&r.value)).collect();
        assert_eq!(tags, [0, 1, 3], "the failed publish never reached the bus");
    }

    #[tokio::test]
    async fn a_gone_broker_fails_everything_until_it_is_back() {
        let bus = faulty();
        publish(&bus, 0).await.unwrap();
        bus.broker_gone(true);
        assert!(matches!(
            publish(&bus, 1).await,
            Err(BusError::Unavailable(_))
        ));
        assert!(bus.ping().await.is_err());
        assert!(bus.lag(Topic::READINGS).await.is_err());
        assert!(bus.receive(Topic::READINGS, 10).await.is_err());
        assert!(bus.ack(Vec::new()).await.is_err());
        bus.broker_gone(false);
        bus.ping().await.unwrap();
        assert_eq!(bus.lag(Topic::READINGS).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn forced_full_reports_the_lag_and_the_hint() {
        let bus = faulty();
        publish(&bus, 0).await.unwrap();
        bus.force_full(Some(Duration::from_millis(1500)));
        match publish(&bus, 1).await {
            Err(BusError::Full {
                pending,
                capacity,
                retry_after,
            }) => {
                assert_eq!((pending, capacity), (2, 2));
                assert_eq!(retry_after, Duration::from_millis(1500));
            }
            other => panic!("expected Full, got {other:?}"),
        }
        bus.heal();
        publish(&bus, 2).await.unwrap();
        assert_eq!(bus.lag(Topic::READINGS).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn slow_publishes_and_failing_acks() {
        let bus = faulty();
        bus.delay_publishes(Duration::from_millis(60));
        let started = Instant::now();
        publish(&bus, 0).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(60));
        bus.fail_acks(true);
        let got = readings::receive(&bus, 10).await.unwrap();
        let tokens: Vec<DeliveryToken> = got.iter().map(|r| r.token.clone()).collect();
        assert!(bus.ack(tokens.clone()).await.is_err());
        assert_eq!(
            bus.lag(Topic::READINGS).await.unwrap(),
            2,
            "nothing settled"
        );
        bus.fail_acks(false);
        bus.ack(tokens).await.unwrap();
        assert_eq!(bus.lag(Topic::READINGS).await.unwrap(), 0);
        bus.close();
        assert!(matches!(publish(&bus, 1).await, Err(BusError::Closed)));
    }
}
