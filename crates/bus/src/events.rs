//! Typed access to [`Topic::EVENTS`]: [`DomainEvent`]s in their JSON wire format (see
//! `vigia_core::domain_event` for why JSON), weighing one each. A consumer in the
//! publishing process gets the publisher's event itself.

use std::sync::Arc;

use bytes::Bytes;
use vigia_core::DomainEvent;

use crate::typed::{self, Codec};
use crate::{Bus, BusError, DecodeError, Delivery, Local, Message, Received, Topic};

struct Events;

impl Codec for Events {
    type Value = DomainEvent;
    const TOPIC: Topic = Topic::EVENTS;

    fn decode(bytes: &[u8]) -> Result<DomainEvent, String> {
        DomainEvent::decode(bytes)
    }
}

/// The message for `event`: its encoding, weight 1, and the event itself for a
/// consumer in this process.
pub fn message(event: DomainEvent) -> Message {
    let payload = Bytes::from(event.encode());
    // The event's strings are about the payload's size; the rest is the struct.
    let bytes = std::mem::size_of::<DomainEvent>() + payload.len();
    Message {
        payload,
        weight: 1,
        local: Some(Local::new(Arc::new(event), bytes)),
    }
}

/// The event an events delivery carries.
pub fn event(delivery: &Delivery) -> Result<Arc<DomainEvent>, DecodeError> {
    typed::value::<Events>(delivery)
}

/// Publishes `event` on [`Topic::EVENTS`].
pub async fn publish<B: Bus + ?Sized>(bus: &B, event: DomainEvent) -> Result<(), BusError> {
    bus.publish(Topic::EVENTS, message(event)).await
}

/// Receives up to `max_events` events (at least one); undecodable deliveries are
/// rejected to dead letters on the way.
pub async fn receive<B: Bus + ?Sized>(
    bus: &B,
    max_events: usize,
) -> Result<Vec<Received<DomainEvent>>, BusError> {
    typed::receive::<Events, B>(bus, Topic::EVENTS, max_events).await
}
