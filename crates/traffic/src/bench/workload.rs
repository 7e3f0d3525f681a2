//! The benchmark's request bodies, generated before any timing starts so that the
//! client's JSON encoding is not part of what is measured.
//!
//! Every reading has its own (sensor, ts): readings go round-robin over the sensors and
//! each sensor's clock advances 1 ms per reading, so the store deduplicates nothing and
//! the commit count can be compared with the number sent.

use std::io::Write;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One pre-encoded request body.
#[derive(Debug, Clone)]
pub struct Body {
    /// The JSON, shared cheaply between a send and its resends.
    pub bytes: Bytes,
    /// How many readings it holds.
    pub readings: u32,
}

/// Produces unique readings with random-walk values for `bench-0000`, `bench-0001`, …
pub struct ReadingGenerator {
    sensors: Vec<String>,
    base_ms: i64,
    next: u64,
    values: Vec<f64>,
    rng: StdRng,
}

impl ReadingGenerator {
    /// A generator over `sensors` sensor keys whose timestamps start at `base_ms`.
    pub fn new(sensors: usize, base_ms: i64, seed: u64) -> Self {
        let sensors = sensors.max(1);
        Self {
            sensors: (0..sensors).map(sensor_key).collect(),
            base_ms,
            next: 0,
            values: vec![-20.0; sensors],
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Bodies holding `total` readings, `per_body` to a body (the last may hold fewer).
    /// One reading a body is sent as a bare object, more as an array — the two shapes
    /// the ingest endpoint takes.
    pub fn bodies(&mut self, total: u64, per_body: usize) -> Vec<Body> {
        let per_body = per_body.max(1) as u64;
        let count = total.div_ceil(per_body);
        let mut bodies = Vec::with_capacity(count as usize);
        let mut left = total;
        while left > 0 {
            let n = left.min(per_body);
            left -= n;
            let mut out = Vec::with_capacity(n as usize * 64 + 2);
            if per_body == 1 {
                self.write_reading(&mut out);
            } else {
                out.push(b'[');
                for i in 0..n {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.write_reading(&mut out);
                }
                out.push(b']');
            }
            bodies.push(Body {
                bytes: Bytes::from(out),
                readings: n as u32,
            });
        }
        bodies
    }

    fn write_reading(&mut self, out: &mut Vec<u8>) {
        let count = self.sensors.len() as u64;
        let sensor = (self.next % count) as usize;
        let ts = self.base_ms + (self.next / count) as i64;
        self.next += 1;
        let value = &mut self.values[sensor];
        *value = (*value + self.rng.random_range(-0.05..0.05)).clamp(-30.0, 10.0);
        write!(
            out,
            r#"{{"sensor":"{}","ts":{},"value":{:.2}}}"#,
            self.sensors[sensor], ts, value
        )
        .expect("writing to a Vec cannot fail");
    }
}

/// The key of the `index`-th benchmark sensor.
pub fn sensor_key(index: usize) -> String {
    format!("bench-{index:04}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use vigia_core::Reading;

    #[derive(serde::Deserialize)]
    struct Wire {
        sensor: String,
        ts: i64,
        value: f64,
    }

    fn decode(body: &Body) -> Vec<Wire> {
        if body.readings == 1 && body.bytes.first() == Some(&b'{') {
            vec![serde_json::from_slice(&body.bytes).expect("object")]
        } else {
            serde_json::from_slice(&body.bytes).expect("array")
        }
    }

    #[test]
    fn every_reading_is_unique_across_both_modes() {
        let mut generator = ReadingGenerator::new(7, 1_700_000_000_000, 1);
        let single = generator.bodies(1000, 1);
        let batched = generator.bodies(10_005, 1000);
        assert_eq!(single.len(), 1000);
        assert_eq!(batched.len(), 11);
        let sizes: Vec<u32> = batched.iter().map(|b| b.readings).collect();
        assert_eq!(sizes[..10], [1000; 10]);
        assert_eq!(sizes[10], 5);

        let mut seen = HashSet::new();
        for body in single.iter().chain(&batched) {
            let readings = decode(body);
            assert_eq!(readings.len(), body.readings as usize);
            for r in readings {
                assert!(r.sensor.starts_with("bench-000"), "{}", r.sensor);
                assert!((-30.0..=10.0).contains(&r.value));
                assert!(seen.insert((r.sensor, r.ts)), "duplicate (sensor, ts)");
            }
        }
        assert_eq!(seen.len(), 11_005);
        let sensors: HashSet<_> = seen.iter().map(|(s, _)| s.clone()).collect();
        assert_eq!(sensors.len(), 7);
        let max_ts = seen.iter().map(|(_, ts)| *ts).max().expect("some");
        assert_eq!(
            max_ts,
            1_700_000_000_000 + 11_005 / 7,
            "1 ms per reading per sensor"
        );
    }

    #[test]
    fn bodies_match_the_ingest_contract() {
        let mut generator = ReadingGenerator::new(2, 0, 2);
        let single = generator.bodies(1, 1);
        assert!(single[0]
            .bytes
            .starts_with(b"{\"sensor\":\"bench-0000\",\"ts\":0,"));
        // The core's Reading needs a metric; the endpoint defaults it, so add it here.
        let batch = &generator.bodies(3, 10)[0];
        let mut values: Vec<serde_json::Value> =
            serde_json::from_slice(&batch.bytes).expect("json");
        for v in &mut values {
            v["metric"] = "temperature".into();
        }
        let readings: Vec<Reading> = serde_json::from_value(values.into()).expect("contract shape");
        assert_eq!(readings.len(), 3);
        assert_eq!(readings[0].sensor, "bench-0001");
    }

    #[test]
    fn values_random_walk_in_small_steps() {
        let mut generator = ReadingGenerator::new(1, 0, 3);
        let readings = decode(&generator.bodies(500, 500)[0]);
        for pair in readings.windows(2) {
            assert!((pair[1].value - pair[0].value).abs() <= 0.06);
        }
        assert!(
            readings.iter().any(|r| (r.value + 20.0).abs() > 0.05),
            "it moves"
        );
    }

    #[test]
    fn empty_and_degenerate_requests() {
        let mut generator = ReadingGenerator::new(0, 0, 4);
        assert!(generator.bodies(0, 1000).is_empty());
        let one = generator.bodies(3, 0);
        assert_eq!(one.len(), 3, "a body size of 0 is treated as 1");
    }
}
