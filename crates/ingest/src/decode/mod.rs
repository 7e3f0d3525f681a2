//! The readings decoders: JSON behind `POST /api/v1/readings` (this module) and InfluxDB
//! line protocol ([`decode_line_protocol`], `line_protocol.rs`).
//!
//! The JSON decoder:
//!
//! A body is one reading object or an array of them:
//! `{"sensor": string, "metric"?: string, "ts"?: RFC 3339 | epoch ms, "value": number}`.
//! `metric` defaults to `temperature` and `ts` to the arrival time; `null` counts as
//! absent for those two. Unknown fields are refused, so a typo such as `valeu` cannot
//! silently fall back to a default.
//!
//! Two paths. The **fast path** deserializes straight into typed rows and validates them;
//! it is all that runs for good input. Only when it fails does the **slow path** run: it
//! re-reads the body tolerantly to report *every* bad row with its index and field. The
//! slow path never produces readings, so accepted values always come from one parser.
//! A batch with any bad row is refused whole.

use serde::de::{DeserializeSeed, Error as _, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use vigia_core::sensor::validate_sensor_key;
use vigia_core::{Reading, Timestamp, DEFAULT_METRIC};

mod line_protocol;
pub mod mqtt;
mod slow;
pub use line_protocol::{
    decode_line_protocol, LineError, LineProtocolError, LineProtocolOptions, Precision,
};
use slow::slow_path;

/// At most this many row errors are listed; `rows_with_errors` still counts them all.
pub const MAX_LISTED_ERRORS: usize = 100;

/// Longest metric name accepted, in characters (the same bound rules have).
pub const MAX_METRIC_LEN: usize = vigia_core::rule::MAX_METRIC_LEN;

/// The characters a reading's metric may hold, as the OpenAPI document states it
/// (ECMA-262): anything but control characters (what `char::is_control` tests).
pub const METRIC_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

/// Limits on what one body may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most readings in one body.
    pub max_rows: usize,
    /// How far past the arrival time a reading's `ts` may be, in milliseconds
    /// (device clocks drift; a reading from tomorrow is a broken clock).
    pub max_future_ms: i64,
    /// How far before the arrival time a reading's `ts` may be, in milliseconds. Set to
    /// the raw retention: an older reading would be deleted at once, and its bucket's
    /// raw readings may be gone, so recomputing the bucket would replace its rollup with
    /// this reading alone.
    pub max_age_ms: i64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_rows: 100_000,
            max_future_ms: 24 * 3_600_000,
            max_age_ms: i64::MAX,
        }
    }
}

/// One problem in one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// Index in the array; `None` when the body is a single object.
    pub row: Option<usize>,
    /// The field as the client wrote it (`value`, `ts`, an unknown name); empty when the
    /// row as a whole is wrong (not an object).
    pub field: String,
    /// What is wrong, in words a person can act on.
    pub message: String,
}

impl RowError {
    /// The field as a path: `[3].value`, `value`, `[3]`, or empty for the whole body.
    pub fn path(&self) -> String {
        match (self.row, self.field.is_empty()) {
            (Some(row), false) => format!("[{row}].{}", self.field),
            (Some(row), true) => format!("[{row}]"),
            (None, _) => self.field.clone(),
        }
    }
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path(), self.message)
    }
}

/// Why a body was refused. Nothing from a refused body is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all (HTTP 400).
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Malformed {
        /// The parser's complaint, without the position.
        message: String,
        /// 1-based line of the offending byte.
        line: usize,
        /// 1-based column of the offending byte (0 for an empty body).
        column: usize,
    },
    /// JSON, but rows break the schema or carry bad values (HTTP 422).
    #[error("{rows_with_errors} invalid row(s)")]
    Invalid {
        /// The problems, at most [`MAX_LISTED_ERRORS`], in row order.
        errors: Vec<RowError>,
        /// How many rows have at least one problem (all of them, listed or not).
        rows_with_errors: usize,
    },
    /// More rows than [`DecodeLimits::max_rows`] (HTTP 413).
    #[error("{rows} readings in one body; at most {max} are accepted")]
    TooManyRows {
        /// Rows in the body.
        rows: usize,
        /// The limit.
        max: usize,
    },
    /// An empty array (HTTP 422).
    #[error("the batch is empty")]
    Empty,
}

/// The time of a reading sent without `ts`, given its sensor and metric.
pub type DefaultTime<'a> = dyn FnMut(&str, &str) -> Timestamp + 'a;

/// Decodes and validates a readings body. `now` is the arrival time: the reference for
/// the time limits, and the default `ts` — except that readings of one sensor and metric
/// without `ts` in one body get successive milliseconds from `now` on, so none is folded
/// into another by the store's (sensor, metric, ts) key.
pub fn decode_readings(
    body: &[u8],
    now: Timestamp,
    limits: &DecodeLimits,
) -> Result<Vec<Reading>, DecodeError> {
    let mut in_body = BodyTimes::new(now);
    decode_readings_timed(body, now, limits, &mut |sensor, metric| {
        in_body.next(sensor, metric)
    })
}

/// [`decode_readings`] with the default time of each reading without `ts` chosen by
/// `default_time` (the ingest service keeps them distinct across requests too).
pub fn decode_readings_timed(
    body: &[u8],
    now: Timestamp,
    limits: &DecodeLimits,
    default_time: &mut DefaultTime<'_>,
) -> Result<Vec<Reading>, DecodeError> {
    // RFC 8259 lets parsers ignore a byte order mark; some Windows tools write one.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    match fast_path(body, now, limits, default_time) {
        Ok(Fast::Readings(readings)) => Ok(readings),
        Ok(Fast::TooMany(rows)) => Err(DecodeError::TooManyRows {
            rows,
            max: limits.max_rows,
        }),
        Ok(Fast::Empty) => Err(DecodeError::Empty),
        Err(fast_error) => Err(slow_path(body, now, limits, &fast_error)),
    }
}

// ---------------------------------------------------------------------------------------
// Fast path

enum Fast {
    Readings(Vec<Reading>),
    TooMany(usize),
    Empty,
}

/// Successive default times per (sensor, metric) within one body.
pub struct BodyTimes {
    now: Timestamp,
    seen: std::collections::HashMap<(String, String), i64>,
}

impl BodyTimes {
    pub fn new(now: Timestamp) -> Self {
        Self {
            now,
            seen: std::collections::HashMap::new(),
        }
    }

    /// `now` for the first reading of a (sensor, metric), then one millisecond later each.
    pub fn next(&mut self, sensor: &str, metric: &str) -> Timestamp {
        let next = self
            .seen
            .entry((sensor.to_string(), metric.to_string()))
            .and_modify(|last| *last += 1)
            .or_insert(self.now.0);
        Timestamp(*next)
    }
}

/// One row as the client sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireReading {
    sensor: String,
    #[serde(default)]
    metric: Option<String>,
    #[serde(default)]
    ts: Option<Timestamp>,
    value: f64,
}

impl WireReading {
    /// Validates and converts; `None` sends the body to the slow path for the details.
    fn into_reading(
        self,
        now: Timestamp,
        limits: &DecodeLimits,
        default_time: &mut DefaultTime<'_>,
    ) -> Option<Reading> {
        let metric = self.metric.as_deref().unwrap_or(DEFAULT_METRIC);
        let ts = match self.ts {
            Some(ts) => ts,
            None => default_time(&self.sensor, metric),
        };
        let ok = validate_sensor_key(&self.sensor).is_ok()
            && self
                .metric
                .as_deref()
                .is_none_or(|m| check_metric(m).is_ok())
            && check_value(self.value).is_ok()
            && check_ts(ts, now, limits).is_ok();
        ok.then(|| Reading {
            sensor: self.sensor,
            metric: self.metric.unwrap_or_else(|| DEFAULT_METRIC.to_string()),
            ts,
            value: self.value,
        })
    }
}

fn fast_path(
    body: &[u8],
    now: Timestamp,
    limits: &DecodeLimits,
    default_time: &mut DefaultTime<'_>,
) -> Result<Fast, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    let fast = match first {
        Some(b'[') => {
            // A reading is rarely under 40 bytes; the estimate avoids regrowing the Vec.
            let capacity = (body.len() / 40 + 1).min(limits.max_rows);
            let seed = RowsSeed {
                now,
                limits,
                capacity,
                default_time,
            };
            seed.deserialize(&mut de)?
        }
        Some(b'{') => {
            let wire = WireReading::deserialize(&mut de)?;
            let reading = wire
                .into_reading(now, limits, default_time)
                .ok_or_else(|| serde_json::Error::custom("invalid reading"))?;
            Fast::Readings(vec![reading])
        }
        _ => return Err(serde_json::Error::custom("expected an object or an array")),
    };
    de.end()?;
    Ok(fast)
}

/// Deserializes the array straight into validated readings, counting past the limit
/// without keeping anything so the error can say how many rows there were.
struct RowsSeed<'l, 't> {
    now: Timestamp,
    limits: &'l DecodeLimits,
    capacity: usize,
    default_time: &'l mut DefaultTime<'t>,
}

impl<'de> DeserializeSeed<'de> for RowsSeed<'_, '_> {
    type Value = Fast;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Fast, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_, '_> {
    type Value = Fast;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of readings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Fast, A::Error> {
        let mut readings = Vec::with_capacity(self.capacity);
        while let Some(wire) = seq.next_element::<WireReading>()? {
            if readings.len() == self.limits.max_rows {
                let mut rows = readings.len() + 1;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    rows += 1;
                }
                return Ok(Fast::TooMany(rows));
            }
            let reading = wire
                .into_reading(self.now, self.limits, self.default_time)
                .ok_or_else(|| A::Error::custom("invalid reading"))?;
            readings.push(reading);
        }
        Ok(if readings.is_empty() {
            Fast::Empty
        } else {
            Fast::Readings(readings)
        })
    }
}

// ---------------------------------------------------------------------------------------
// Checks shared by both paths

pub(crate) fn check_metric(metric: &str) -> Result<(), &'static str> {
    if metric.is_empty()
        || vigia_core::longer_than(metric, MAX_METRIC_LEN)
        || metric.chars().any(char::is_control)
    {
        return Err("must be 1 to 64 characters without control characters");
    }
    Ok(())
}

pub(crate) fn check_value(value: f64) -> Result<(), &'static str> {
    if value.is_finite() {
        Ok(())
    } else {
        Err("must be a finite number")
    }
}

/// An event time must be one RFC 3339 can write (responses show it so) and not too far
/// ahead of the arrival time.
pub(crate) fn check_ts(ts: Timestamp, now: Timestamp, limits: &DecodeLimits) -> Result<(), String> {
    if !ts.is_rfc3339() {
        return Err(
            "must be between 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z \
             (epoch ms -62167219200000 to 253402300799999)"
                .into(),
        );
    }
    if ts.0.saturating_sub(now.0) > limits.max_future_ms {
        return Err(format!(
            "is more than {} in the future",
            span(limits.max_future_ms)
        ));
    }
    if now.0.saturating_sub(ts.0) > limits.max_age_ms {
        return Err(format!(
            "is more than {} in the past (`ingest.max_age`: older readings are past the raw retention)",
            span(limits.max_age_ms)
        ));
    }
    Ok(())
}

/// A limit in the largest whole unit that writes it exactly (days from two on, so the
/// default 24 h reads as hours).
fn span(ms: i64) -> String {
    if ms % 86_400_000 == 0 && ms >= 2 * 86_400_000 {
        format!("{} d", ms / 86_400_000)
    } else if ms % 3_600_000 == 0 {
        format!("{} h", ms / 3_600_000)
    } else if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}
