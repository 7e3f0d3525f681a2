//! Typed access to [`Topic::READINGS`]: accepted readings as [`IngestBatch`]es, in the
//! compact binary encoding of `vigia_core::reading` (the wire format), weighing one per
//! reading. Workers decode the bytes, in this process too (see [`message`] for why).

use std::sync::Arc;

use bytes::Bytes;
use vigia_core::IngestBatch;

use crate::typed::{self, Codec};
use crate::{Bus, BusError, DecodeError, Delivery, Message, Received, Topic};

struct Readings;

impl Codec for Readings {
    type Value = IngestBatch;
    const TOPIC: Topic = Topic::READINGS;

    fn decode(bytes: &[u8]) -> Result<IngestBatch, String> {
        IngestBatch::decode(bytes)
    }
}

/// The message for `batch`: its encoding and its reading count as weight.
///
/// Unlike events, a readings message does not carry the decoded batch for a consumer in
/// this process ([`Message::local`]), though the bus could: measured with `vigia bench
/// ingest --spawn --mode batched` (three rounds each way, same run), attaching it held
/// peak RSS at 100–103 MB against 89–93 MB without, and committed 846–848k readings/s
/// against 869–880k. The decoded batch is ~4× its encoding (two heap strings per
/// reading), and with it attached it lives from the request until the worker's ack,
/// freed on another thread, instead of only during the request; decoding the compact
/// bytes again in the worker costs less than that.
pub fn message(batch: IngestBatch) -> Message {
    let payload = Bytes::from(batch.encode());
    let weight = u32::try_from(batch.readings.len()).unwrap_or(u32::MAX);
    Message {
        payload,
        weight,
        local: None,
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
