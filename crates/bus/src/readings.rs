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

    fn carries(topic: Topic) -> bool {
        topic.readings_partition().is_some()
    }

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

/// Publishes `batch` on [`Topic::READINGS`] (an unpartitioned bus).
pub async fn publish<B: Bus + ?Sized>(bus: &B, batch: IngestBatch) -> Result<(), BusError> {
    bus.publish(Topic::READINGS, message(batch)).await
}

/// Receives batches holding up to about `max_readings` readings (at least one batch)
/// from [`Topic::READINGS`]; undecodable deliveries are rejected to dead letters on the way.
pub async fn receive<B: Bus + ?Sized>(
    bus: &B,
    max_readings: usize,
) -> Result<Vec<Received<IngestBatch>>, BusError> {
    receive_from(bus, Topic::READINGS, max_readings).await
}

/// Publishes `batch` split by sensor over the first `partitions` readings partitions
/// (`vigia_core::partition::partition_of`), each part in its readings' order, all parts
/// at once; returns when every part is durable. One partition is [`publish`].
///
/// When one part is refused (`Full`, unavailable) the others may already be durable:
/// the error is returned all the same, and a client's retry stores those readings again
/// under the same (sensor, metric, ts), which the store keeps once.
pub async fn publish_partitioned<B: Bus + ?Sized>(
    bus: &B,
    batch: IngestBatch,
    partitions: usize,
) -> Result<(), BusError> {
    let partitions = partitions.clamp(1, crate::MAX_READINGS_PARTITIONS);
    if partitions == 1 {
        return publish(bus, batch).await;
    }
    let mut parts: Vec<Vec<vigia_core::Reading>> = vec![Vec::new(); partitions];
    for reading in batch.readings {
        let p = vigia_core::partition::partition_of(batch.tenant, &reading.sensor, partitions);
        parts[p].push(reading);
    }
    let publishes = parts
        .into_iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .map(|(p, readings)| {
            let topic = Topic::readings(p).expect("partitions are clamped to the family");
            let part = IngestBatch {
                tenant: batch.tenant,
                received_ms: batch.received_ms,
                readings,
            };
            bus.publish(topic, message(part))
        });
    for result in futures_util::future::join_all(publishes).await {
        result?;
    }
    Ok(())
}

/// [`receive`] from one readings partition.
///
/// # Panics
/// In debug builds, when `partition` is not a readings partition.
pub async fn receive_from<B: Bus + ?Sized>(
    bus: &B,
    partition: Topic,
    max_readings: usize,
) -> Result<Vec<Received<IngestBatch>>, BusError> {
    typed::receive::<Readings, B>(bus, partition, max_readings).await
}

/// Readings published on the first `partitions` partitions and not yet acked.
pub async fn lag<B: Bus + ?Sized>(bus: &B, partitions: usize) -> Result<u64, BusError> {
    let mut total = 0;
    for topic in Topic::readings_partitions(partitions) {
        total += bus.lag(topic).await?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use vigia_core::{partition::partition_of, Reading, TenantId, Timestamp};

    use super::*;
    use crate::{Capacity, VolatileBus};

    #[tokio::test]
    async fn a_partitioned_publish_sends_each_sensor_to_its_partition_in_order() {
        let bus = VolatileBus::new(Capacity::default());
        let tenant = TenantId(7);
        let readings: Vec<Reading> = (0..40)
            .map(|i| Reading {
                sensor: format!("CF-{}", i % 8),
                metric: "temperature".into(),
                ts: Timestamp(1_000 + i),
                value: i as f64,
            })
            .collect();
        let batch = IngestBatch {
            tenant,
            received_ms: 5,
            readings: readings.clone(),
        };
        publish_partitioned(&bus, batch, 4).await.unwrap();
        assert_eq!(lag(&bus, 4).await.unwrap(), 40);
        let mut seen = 0;
        let mut first_part = 0;
        for (p, topic) in Topic::readings_partitions(4).enumerate() {
            let want: Vec<&Reading> = readings
                .iter()
                .filter(|r| partition_of(tenant, &r.sensor, 4) == p)
                .collect();
            if want.is_empty() {
                continue;
            }
            let got = receive_from(&bus, topic, 1000).await.unwrap();
            assert_eq!(got.len(), 1, "one part per partition");
            let part = &got[0].value;
            assert_eq!((part.tenant, part.received_ms), (tenant, 5));
            assert_eq!(part.readings.iter().collect::<Vec<_>>(), want, "{topic}");
            seen += part.readings.len();
            if p == 0 {
                first_part = part.readings.len() as u64;
            }
        }
        assert_eq!(seen, 40);
        // One partition is the plain readings topic.
        let batch = IngestBatch {
            tenant,
            received_ms: 6,
            readings,
        };
        publish_partitioned(&bus, batch, 1).await.unwrap();
        assert_eq!(
            bus.lag(Topic::READINGS).await.unwrap(),
            first_part + 40,
            "all 40 on partition 0, beside its unacked part of the first publish"
        );
        assert_eq!(lag(&bus, 4).await.unwrap(), 80);
    }
}
