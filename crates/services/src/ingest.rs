//! The ingest service: the one entry every device protocol calls (HTTP JSON, InfluxDB
//! line protocol; MQTT). Decode → provisioning policy → publish on the bus
//! (durable before it returns) → metrics. Authentication happens before, in the front
//! end, through the [`crate::Authenticator`]; the caller's role is checked here.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use vigia_bus::{Bus, BusError};
use vigia_core::{IngestBatch, Permission, Reading, TenantId, Timestamp};
use vigia_ingest::decode::{
    decode_line_protocol, decode_readings_timed, DecodeError, DecodeLimits, LineProtocolError,
    LineProtocolOptions, Precision,
};
use vigia_ingest::{metrics as m, Provisioning, SensorDirectory};

use crate::{Caller, ServiceError};

/// Bodies larger than this are decoded off the async runtime.
const INLINE_DECODE_LIMIT: usize = 256 * 1024;

/// Most per-row errors listed when readings of unprovisioned sensors are refused.
const MAX_LISTED_ROWS: usize = 100;

/// Limits of one ingest request.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Largest request body accepted (front ends answer 413 past it).
    pub max_body_bytes: usize,
    pub decode: DecodeLimits,
}

/// Why readings were not accepted. Nothing of a refused request is stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    LineProtocol(#[from] LineProtocolError),
    /// Readings of sensors nobody provisioned, under `provisioning = required`: the
    /// listed rows (row index when the request was a batch) and how many there were.
    #[error("readings of unprovisioned sensors")]
    Unprovisioned {
        rows: Vec<(Option<usize>, String)>,
        total: usize,
    },
    /// The bus refused (full, closing, unavailable): retry later.
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Series whose last default time is remembered before the stale ones are dropped.
const MAX_DEFAULT_TIMES: usize = 100_000;

/// The last default time handed out per (tenant, sensor, metric). A reading sent without
/// `ts` gets its arrival millisecond, or the millisecond after the last such reading of
/// its series when that is later, so two of them arriving in the same millisecond (in
/// one body or in two requests) are two readings, not one folded into the other by the
/// store's (sensor, metric, ts) key while both were acknowledged.
#[derive(Default)]
pub struct DefaultTimes {
    last: std::sync::Mutex<HashMap<(TenantId, String, String), i64>>,
}

impl DefaultTimes {
    /// The time of the next reading without `ts` of this series, arriving at `now`.
    pub fn next(&self, tenant: TenantId, sensor: &str, metric: &str, now: Timestamp) -> Timestamp {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() >= MAX_DEFAULT_TIMES {
            // A series last stamped before `now` gets `now` anyway: it cannot collide.
            last.retain(|_, at| *at >= now.0);
            if last.len() >= MAX_DEFAULT_TIMES {
                last.clear();
            }
        }
        let at = last
            .entry((tenant, sensor.to_string(), metric.to_string()))
            .and_modify(|at| *at = now.0.max(*at + 1))
            .or_insert(now.0);
        Timestamp(*at)
    }
}

/// Takes readings from devices and makes them durable on the bus.
pub struct IngestService {
    bus: Arc<dyn Bus>,
    directory: Arc<SensorDirectory>,
    provisioning: Provisioning,
    limits: IngestLimits,
    /// The line protocol tag that names the sensor.
    sensor_tag: String,
    default_times: Arc<DefaultTimes>,
    /// Readings partitions of the bus (see [`IngestService::with_partitions`]).
    partitions: usize,
}

impl IngestService {
    pub fn new(
        bus: Arc<dyn Bus>,
        directory: Arc<SensorDirectory>,
        provisioning: Provisioning,
        limits: IngestLimits,
    ) -> Self {
        Self {
            bus,
            directory,
            provisioning,
            limits,
            sensor_tag: "sensor".into(),
            default_times: Arc::default(),
            partitions: 1,
        }
    }

    /// Spreads published readings over the bus's first `partitions` readings partitions
    /// by sensor (`bus_partitions`; default 1), as the workers that own them expect.
    pub fn with_partitions(mut self, partitions: usize) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// Names the line protocol tag that carries the sensor key (default `sensor`).
    pub fn with_line_protocol_sensor_tag(mut self, tag: impl Into<String>) -> Self {
        self.sensor_tag = tag.into();
        self
    }

    /// The limits front ends enforce before calling (body size).
    pub fn limits(&self) -> &IngestLimits {
        &self.limits
    }

    /// Decodes a JSON body (one reading or an array) and publishes it; returns how many
    /// readings are now durable.
    pub async fn ingest_json(&self, caller: &Caller, body: Bytes) -> Result<usize, IngestError> {
        caller.require(Permission::Ingest)?;
        let now = Timestamp::now();
        let limits = self.limits.decode.clone();
        let (times, tenant) = (self.default_times.clone(), caller.tenant);
        let inline = body.len() <= INLINE_DECODE_LIMIT;
        let decode = move || {
            decode_readings_timed(&body, now, &limits, &mut |sensor, metric| {
                times.next(tenant, sensor, metric, now)
            })
        };
        let readings = if inline {
            decode()?
        } else {
            tokio::task::spawn_blocking(decode)
                .await
                .map_err(|e| BusError::Unavailable(format!("decoder task failed: {e}")))??
        };
        self.publish(caller, readings, now).await
    }

    /// Decodes an InfluxDB line protocol body (already inflated) whose timestamps are in
    /// `precision` and publishes it; returns how many readings are now durable.
    pub async fn ingest_line_protocol(
        &self,
        caller: &Caller,
        body: Bytes,
        precision: Precision,
    ) -> Result<usize, IngestError> {
        caller.require(Permission::Ingest)?;
        let now = Timestamp::now();
        let limits = self.limits.decode.clone();
        let options = LineProtocolOptions {
            sensor_tag: self.sensor_tag.clone(),
            precision,
        };
        let inline = body.len() <= INLINE_DECODE_LIMIT;
        let decode = move || decode_line_protocol(&body, now, &limits, &options);
        let readings = if inline {
            decode()?
        } else {
            tokio::task::spawn_blocking(decode)
                .await
                .map_err(|e| BusError::Unavailable(format!("decoder task failed: {e}")))??
        };
        self.publish(caller, readings, now).await
    }

    /// Publishes already decoded, validated readings (for protocols with their own
    /// decoders); returns how many are now durable.
    pub async fn publish(
        &self,
        caller: &Caller,
        readings: Vec<Reading>,
        received: Timestamp,
    ) -> Result<usize, IngestError> {
        caller.require(Permission::Ingest)?;
        if self.provisioning == Provisioning::Required {
            self.refuse_unknown_sensors(caller, &readings)?;
        }
        let accepted = readings.len();
        vigia_bus::readings::publish_partitioned(
            &*self.bus,
            IngestBatch {
                tenant: caller.tenant,
                received_ms: received.0,
                readings,
            },
            self.partitions,
        )
        .await?;
        metrics::counter!(m::INGEST_READINGS).increment(accepted as u64);
        Ok(accepted)
    }

    fn refuse_unknown_sensors(
        &self,
        caller: &Caller,
        readings: &[Reading],
    ) -> Result<(), IngestError> {
        let single = readings.len() == 1;
        let mut rows = Vec::new();
        let mut total = 0;
        for (i, r) in readings.iter().enumerate() {
            if !self.directory.contains(caller.tenant, &r.sensor) {
                total += 1;
                if rows.len() < MAX_LISTED_ROWS {
                    rows.push(((!single).then_some(i), r.sensor.clone()));
                }
            }
        }
        if total == 0 {
            Ok(())
        } else {
            Err(IngestError::Unprovisioned { rows, total })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_without_ts_of_one_series_get_distinct_milliseconds() {
        let times = DefaultTimes::default();
        let (t, now) = (TenantId(1), Timestamp(1_000));
        assert_eq!(times.next(t, "a", "temperature", now), Timestamp(1_000));
        assert_eq!(times.next(t, "a", "temperature", now), Timestamp(1_001));
        // Other series, other tenants: their own clocks.
        assert_eq!(times.next(t, "a", "humidity", now), Timestamp(1_000));
        assert_eq!(
            times.next(TenantId(2), "a", "temperature", now),
            Timestamp(1_000)
        );
        // Later arrivals take their own millisecond once past the last one given.
        assert_eq!(
            times.next(t, "a", "temperature", Timestamp(1_001)),
            Timestamp(1_002)
        );
        assert_eq!(
            times.next(t, "a", "temperature", Timestamp(5_000)),
            Timestamp(5_000)
        );
    }

    #[test]
    fn the_memory_is_bounded() {
        let times = DefaultTimes::default();
        for i in 0..MAX_DEFAULT_TIMES + 10 {
            times.next(TenantId(1), &format!("s{i}"), "m", Timestamp(i as i64));
        }
        assert!(times.last.lock().unwrap().len() <= MAX_DEFAULT_TIMES);
    }
}
