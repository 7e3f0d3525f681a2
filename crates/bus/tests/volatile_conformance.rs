//! The volatile bus against the shared conformance suite (a restart is a new handle on
//! the same state), plus what only it can show: handles on one state share it as
//! processes share a broker, and a handle that goes away hands its deliveries back.

use std::time::Duration;

use async_trait::async_trait;
use vigia_bus::conformance::{run_all, sample_batch, tag_of, BusHarness};
use vigia_bus::{readings, Bus, Capacity, Topic, VolatileBus, VolatileState};

struct VolatileHarness;

#[async_trait]
impl BusHarness for VolatileHarness {
    type Bus = VolatileBus;

    async fn fresh(&self, capacity: Capacity) -> VolatileBus {
        VolatileBus::new(capacity)
    }

    async fn reopen(&self, old: VolatileBus) -> VolatileBus {
        let state = old.state().clone();
        drop(old);
        VolatileBus::open(&state)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    run_all(&VolatileHarness).await;
}

#[tokio::test]
async fn handles_on_one_state_share_messages_lag_and_capacity() {
    let state = VolatileState::new(Capacity::default().with(Topic::READINGS, 5));
    let (ingest, worker) = (VolatileBus::open(&state), VolatileBus::open(&state));
    readings::publish(&ingest, sample_batch(1, 3))
        .await
        .unwrap();
    let full = readings::publish(&worker, sample_batch(2, 3)).await;
    assert!(full.is_err(), "capacity is the state's: {full:?}");
    let got = readings::receive(&worker, 10).await.unwrap();
    assert_eq!(tag_of(&got[0].value), 1);
    assert_eq!(ingest.lag(Topic::READINGS).await.unwrap(), 3);
    let tokens = vec![got[0].token.clone()];
    ingest.ack(tokens.clone()).await.unwrap();
    assert_eq!(
        ingest.lag(Topic::READINGS).await.unwrap(),
        3,
        "not ingest's to ack"
    );
    worker.ack(tokens).await.unwrap();
    assert_eq!(ingest.lag(Topic::READINGS).await.unwrap(), 0);
}

#[tokio::test]
async fn a_dropped_handle_hands_its_deliveries_to_the_others() {
    let state = VolatileState::new(Capacity::default());
    let survivor = VolatileBus::open(&state);
    readings::publish(&survivor, sample_batch(7, 2))
        .await
        .unwrap();
    {
        let doomed = VolatileBus::open(&state);
        let got = doomed.receive(Topic::READINGS, 10).await.unwrap();
        assert_eq!(got.len(), 1);
        let waiting = tokio::time::timeout(
            Duration::from_millis(50),
            survivor.receive(Topic::READINGS, 10),
        )
        .await;
        assert!(waiting.is_err(), "in flight with the other handle");
    }
    let got = readings::receive(&survivor, 10).await.unwrap();
    assert_eq!(tag_of(&got[0].value), 7);
    assert!(got[0].redelivered);
}

#[tokio::test]
async fn rejected_messages_are_kept_as_dead_letters() {
    let bus = VolatileBus::new(Capacity::default());
    bus.publish(
        Topic::EVENTS,
        vigia_bus::Message::from_bytes(&b"nope"[..], 1),
    )
    .await
    .unwrap();
    vigia_bus::events::publish(&bus, vigia_bus::conformance::sample_event(3))
        .await
        .unwrap();
    let got = vigia_bus::events::receive(&bus, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    let dead = bus.state().dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].topic, &dead[0].payload[..]),
        (Topic::EVENTS, &b"nope"[..])
    );
    assert!(!dead[0].reason.is_empty());
    assert_eq!(bus.lag(Topic::EVENTS).await.unwrap(), 1);
}
