//! Readings: one value of one metric of one sensor at one instant.

use serde::{Deserialize, Serialize};

use crate::{TenantId, Timestamp};

/// The metric a reading measures when the client does not say.
pub const DEFAULT_METRIC: &str = "temperature";

/// A validated reading, as it travels on the bus and into the store.
///
/// Identity is (tenant, sensor, metric, ts): the store keeps one row per identity,
/// so a redelivered reading is written once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reading {
    /// Sensor key, unique within the tenant (e.g. `CF-1`).
    pub sensor: String,
    /// Metric name (e.g. `temperature`).
    pub metric: String,
    /// Event time: when the device measured it, not when it arrived.
    #[serde(with = "millis")]
    #[schema(value_type = String, format = DateTime)]
    pub ts: Timestamp,
    /// The measured value; always finite.
    pub value: f64,
}

/// What ingest publishes on the bus: one accepted request's readings for one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestBatch {
    pub tenant: TenantId,
    /// Arrival time at ingest, for lag metrics.
    pub received_ms: i64,
    pub readings: Vec<Reading>,
}

impl IngestBatch {
    /// Compact binary encoding used by durable bus backends.
    pub fn encode(&self) -> Vec<u8> {
        binary_codec::encode(self)
    }

    /// Inverse of [`IngestBatch::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        binary_codec::decode(bytes)
    }
}

/// Serialises the timestamp as RFC 3339 in JSON, but keeps a plain integer in
/// binary formats so the bus encoding stays compact.
mod millis {
    use super::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&ts.to_rfc3339())
        } else {
            s.serialize_i64(ts.0)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        if d.is_human_readable() {
            Timestamp::deserialize(d)
        } else {
            i64::deserialize(d).map(Timestamp)
        }
    }
}

/// A small, dependency-free binary codec for [`IngestBatch`]: length-prefixed strings,
/// little-endian numbers. The bus stores millions of these, so size and speed matter
/// more than self-description; a version byte leaves room to change it.
///
/// The encoding is canonical: `decode` accepts exactly the bytes `encode` produces for
/// some batch of validated readings (finite values, keys and metrics far below the
/// 65,535-byte length prefix), so `encode(decode(b)) == b` for every accepted `b`
/// (fuzzed: `fuzz/fuzz_targets/bus_payload.rs`; property tests in
/// `crates/core/tests/batch_codec_props.rs`). A damaged payload is refused rather than
/// decoded into readings no store could hold (a NaN, a truncated string).
mod binary_codec {
    use super::{IngestBatch, Reading, TenantId, Timestamp};

    const VERSION: u8 = 1;

    pub fn encode(batch: &IngestBatch) -> Vec<u8> {
        let mut out = Vec::with_capacity(21 + batch.readings.len() * 40);
        out.push(VERSION);
        out.extend_from_slice(&batch.tenant.0.to_le_bytes());
        out.extend_from_slice(&batch.received_ms.to_le_bytes());
        out.extend_from_slice(&(batch.readings.len() as u32).to_le_bytes());
        for r in &batch.readings {
            put_str(&mut out, &r.sensor);
            put_str(&mut out, &r.metric);
            out.extend_from_slice(&r.ts.0.to_le_bytes());
            out.extend_from_slice(&r.value.to_le_bytes());
        }
        out
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        // Validation bounds keys (128 chars) and metrics (64) far below the prefix; a
        // longer string would need a new version of the encoding, never a silent cut.
        let len = u16::try_from(s.len()).expect("validated strings fit a u16 length prefix");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    struct Cursor<'a>(&'a [u8]);

    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            if self.0.len() < n {
                return Err("truncated batch".into());
            }
            let (head, tail) = self.0.split_at(n);
            self.0 = tail;
            Ok(head)
        }
        fn u8(&mut self) -> Result<u8, String> {
            Ok(self.take(1)?[0])
        }
        fn i64(&mut self) -> Result<i64, String> {
            Ok(i64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            ))
        }
        fn f64(&mut self) -> Result<f64, String> {
            Ok(f64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            ))
        }
        fn u32(&mut self) -> Result<u32, String> {
            Ok(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            ))
        }
        fn string(&mut self) -> Result<String, String> {
            let len = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
            let bytes = self.take(len)?;
            String::from_utf8(bytes.to_vec()).map_err(|_| "invalid UTF-8 in batch".to_string())
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<IngestBatch, String> {
        let mut c = Cursor(bytes);
        let version = c.u8()?;
        if version != VERSION {
            return Err(format!("unknown batch encoding version {version}"));
        }
        let tenant = TenantId(c.i64()?);
        let received_ms = c.i64()?;
        let count = c.u32()? as usize;
        // Never trust a length prefix for an allocation larger than the input could hold.
        let mut readings = Vec::with_capacity(count.min(bytes.len() / 20));
        for _ in 0..count {
            let sensor = c.string()?;
            let metric = c.string()?;
            let ts = Timestamp(c.i64()?);
            let value = c.f64()?;
            if !value.is_finite() {
                return Err("non-finite value in batch".into());
            }
            readings.push(Reading {
                sensor,
                metric,
                ts,
                value,
            });
        }
        if !c.0.is_empty() {
            return Err("trailing bytes after batch".into());
        }
        Ok(IngestBatch {
            tenant,
            received_ms,
            readings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_encoding_round_trips() {
        let batch = IngestBatch {
            tenant: TenantId(7),
            received_ms: 1_700_000_000_123,
            readings: vec![
                Reading {
                    sensor: "CF-1".into(),
                    metric: "temperature".into(),
                    ts: Timestamp(1_700_000_000_000),
                    value: -19.75,
                },
                Reading {
                    sensor: "cámara ñ".into(),
                    metric: "humidity".into(),
                    ts: Timestamp(-5),
                    value: 0.0,
                },
            ],
        };
        let bytes = batch.encode();
        assert_eq!(IngestBatch::decode(&bytes).unwrap(), batch);
        for cut in 0..bytes.len() {
            assert!(IngestBatch::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn reading_json_uses_rfc3339() {
        let r = Reading {
            sensor: "CF-1".into(),
            metric: DEFAULT_METRIC.into(),
            ts: Timestamp(0),
            value: 1.5,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"sensor":"CF-1","metric":"temperature","ts":"1970-01-01T00:00:00.000Z","value":1.5}"#
        );
    }
}
