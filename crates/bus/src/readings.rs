//! Typed access to [`Topic::READINGS`]: accepted readings as [`IngestBatch`]es, in the
//! compact binary encoding of `vigia_core::reading` (the wire format), weighing one per
//! reading. A worker in the publishing process gets the publisher's batch itself.

use std::sync::Arc;

use bytes::Bytes;
use vigia_core::{IngestBatch, Reading};

use crate::typed::{self, Codec};
use crate::{Bus, BusError, DecodeError, Delivery, Local, Message, Received, Topic};

struct Readings;

impl Codec for Readings {
    type Value = IngestBatch;
    const TOPIC: Topic = Topic::READINGS;

    fn decode(bytes: &[u8]) -> Result<IngestBatch, String> {
        IngestBatch::decode(bytes)
    }
}

/// The message for `batch`: its encoding, its reading count as weight, and the batch
/// itself for a consumer in this process.
pub fn message(batch: IngestBatch) -> Message {
    let payload = Bytes::from(batch.encode());
    let weight = u32::try_from(batch.readings.len()).unwrap_or(u32::MAX);
    // The strings' bytes are about the payload's; the rest is the structs around them.
    let bytes = std::mem::size_of::<IngestBatch>()
        + batch.readings.len() * std::mem::size_of::<Reading>()
        + payload.len();
    Message {
        payload,
        weight,
        local: Some(Local::new(Arc::new(batch), bytes)),
    }
}

/// The batch a readings delivery carries.
pub fn batch(delivery: &Delivery) -> Result<Arc<IngestBatch>, DecodeError> {
    typed::value::<Readings>(delivery)
}

/// Publishes `batch` on [`Topic::READINGS`].
pub async fn publish<B: Bus + ?Sized>(bus: &B, batch: IngestBatch) -> Result<(), BusError> {
    bus.publish(Topic::READINGS, message(batch)).await
}

/// Receives batches holding up to about `max_readings` readings (at least one batch);
/// undecodable deliveries are rejected to dead letters on the way.
pub async fn receive<B: Bus + ?Sized>(
    bus: &B,
    max_readings: usize,
) -> Result<Vec<Received<IngestBatch>>, BusError> {
    typed::receive::<Readings, B>(bus, max_readings).await
}
