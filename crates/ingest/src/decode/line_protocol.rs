//! The InfluxDB line protocol decoder behind `POST /api/v2/write` and `POST /write`, so
//! Telegraf and other InfluxDB clients send to Vigía unchanged.
//!
//! A line is `measurement[,tag=value…] field=value[,field=value…] [timestamp]`. The tag
//! named by [`LineProtocolOptions::sensor_tag`] (default `sensor`) names the sensor; every
//! numeric field is a metric of that name, except a field called `value`, which takes the
//! measurement's name (`temperature,sensor=CF-1 value=-18.5`). Integers (`12i`, `12u`)
//! and floats are values; booleans become 1 and 0; a string field cannot be a reading and
//! is an error. Other tags are ignored. Blank lines and `#` comments are skipped. The
//! timestamp is an integer in the request's precision (nanoseconds by default), taken
//! down to Vigía's milliseconds; without one, the arrival time is used.
//!
//! Like the JSON decoder, a body with any bad line is refused whole, and every bad line
//! is named (1-based line number, the element, what is wrong). Two lines that would give
//! the same sensor, metric and millisecond with different values are an error too:
//! storing one of them and acknowledging both would lie to the client.
//!
//! The scanner works on bytes and borrows from the body; it allocates only the strings a
//! reading owns, and only unescapes when a backslash is present.

use std::borrow::Cow;
use std::collections::HashMap;

use vigia_core::sensor::validate_sensor_key;
use vigia_core::{Reading, Timestamp};

use super::{check_metric, check_ts, check_value, DecodeLimits, MAX_LISTED_ERRORS};

/// The units of a line's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    /// InfluxDB 1.x also takes minutes and hours.
    Minutes,
    Hours,
}

impl Precision {
    /// Parses the `precision` parameter: v2 spells `ns`, `us`, `ms`, `s`; v1 also `n`,
    /// `u`, `m` (minutes!), `h`. `None` for anything else.
    pub fn parse(s: &str) -> Option<Precision> {
        Some(match s {
            "ns" | "n" => Precision::Nanoseconds,
            "us" | "u" | "µ" | "µs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            _ => return None,
        })
    }

    /// The timestamp in milliseconds, rounded down (toward the past) like InfluxDB
    /// truncates to a coarser precision; `None` when it does not fit.
    fn to_millis(self, ts: i64) -> Option<i64> {
        match self {
            Precision::Nanoseconds => Some(ts.div_euclid(1_000_000)),
            Precision::Microseconds => Some(ts.div_euclid(1_000)),
            Precision::Milliseconds => Some(ts),
            Precision::Seconds => ts.checked_mul(1_000),
            Precision::Minutes => ts.checked_mul(60_000),
            Precision::Hours => ts.checked_mul(3_600_000),
        }
    }
}

/// How lines map to readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProtocolOptions {
    /// The tag that names the sensor.
    pub sensor_tag: String,
    pub precision: Precision,
}

impl Default for LineProtocolOptions {
    fn default() -> Self {
        Self {
            sensor_tag: "sensor".into(),
            precision: Precision::Nanoseconds,
        }
    }
}

/// One problem in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the body.
    pub line: usize,
    /// The element: `measurement`, `tag sensor`, `field humidity`, `timestamp`, or empty
    /// when the line as a whole is wrong.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(f, "line {}: {}: {}", self.line, self.field, self.message)
        }
    }
}

/// Why a line protocol body was refused. Nothing from a refused body is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProtocolError {
    /// Lines that do not parse or carry bad values (HTTP 400, as InfluxDB answers).
    #[error("{lines_with_errors} invalid line(s)")]
    Invalid {
        /// At most [`MAX_LISTED_ERRORS`], in line order.
        errors: Vec<LineError>,
        /// How many lines have a problem (all of them, listed or not).
        lines_with_errors: usize,
    },
    /// More readings than [`DecodeLimits::max_rows`] (HTTP 413).
    #[error("{readings} readings in one body; at most {max} are accepted")]
    TooManyRows { readings: usize, max: usize },
    /// No line holds a reading (HTTP 400).
    #[error("the body holds no lines")]
    Empty,
}

/// Decodes and validates a line protocol body. `now` is the arrival time: the default
/// timestamp and the reference for the future limit.
pub fn decode_line_protocol(
    body: &[u8],
    now: Timestamp,
    limits: &DecodeLimits,
    options: &LineProtocolOptions,
) -> Result<Vec<Reading>, LineProtocolError> {
    let mut readings: Vec<Reading> = Vec::with_capacity((body.len() / 48 + 1).min(limits.max_rows));
    // The line each reading came from, to name both lines of a conflict.
    let mut origins: Vec<u32> = Vec::with_capacity(readings.capacity());
    let mut errors = Vec::new();
    let mut lines_with_errors = 0;
    let mut too_many = 0usize;
    let mut scratch = LineScratch::default();

    for (index, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = trim_start(line);
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        scratch.fields.clear();
        let parsed = match std::str::from_utf8(line) {
            Ok(line) => parse_line(line, options, now, limits, &mut scratch),
            Err(e) => Err(element_error(
                "",
                format!("is not valid UTF-8 (byte {})", e.valid_up_to() + 1),
            )),
        };
        match parsed {
            Ok(()) => {
                if too_many > 0 || readings.len() + scratch.fields.len() > limits.max_rows {
                    too_many = too_many.max(readings.len()) + scratch.fields.len();
                    continue;
                }
                let last = scratch.fields.len() - 1;
                for (i, (metric, value)) in scratch.fields.drain(..).enumerate() {
                    // One allocation per reading: the last field takes the buffer.
                    let sensor = if i == last {
                        std::mem::take(&mut scratch.sensor)
                    } else {
                        scratch.sensor.clone()
                    };
                    readings.push(Reading {
                        sensor,
                        metric,
                        ts: scratch.ts,
                        value,
                    });
                    origins.push(line_no as u32);
                }
            }
            Err((field, message)) => {
                lines_with_errors += 1;
                if errors.len() < MAX_LISTED_ERRORS {
                    errors.push(LineError {
                        line: line_no,
                        field,
                        message,
                    });
                }
            }
        }
    }

    if lines_with_errors == 0 {
        if too_many > 0 {
            return Err(LineProtocolError::TooManyRows {
                readings: too_many,
                max: limits.max_rows,
            });
        }
        if readings.is_empty() {
            return Err(LineProtocolError::Empty);
        }
    }
    find_conflicts(&readings, &origins, &mut errors, &mut lines_with_errors);
    if lines_with_errors > 0 {
        errors.sort_by_key(|e| e.line);
        errors.truncate(MAX_LISTED_ERRORS);
        return Err(LineProtocolError::Invalid {
            errors,
            lines_with_errors,
        });
    }
    Ok(readings)
}

/// Reused between lines so a body allocates per reading, not per token.
struct LineScratch {
    sensor: String,
    ts: Timestamp,
    fields: Vec<(String, f64)>,
}

impl Default for LineScratch {
    fn default() -> Self {
        Self {
            sensor: String::new(),
            ts: Timestamp(0),
            fields: Vec::new(),
        }
    }
}

type ElementError = (String, String);

fn element_error(field: impl Into<String>, message: impl Into<String>) -> ElementError {
    (field.into(), message.into())
}

fn parse_line(
    line: &str,
    options: &LineProtocolOptions,
    now: Timestamp,
    limits: &DecodeLimits,
    out: &mut LineScratch,
) -> Result<(), ElementError> {
    // The line was validated as UTF-8 once; every token ends at an ASCII delimiter (or
    // the end), so slicing `line` at those offsets never splits a character.
    let bytes = line.as_bytes();
    let mut pos = 0;
    // Measurement: up to an unescaped comma or space.
    let end = scan(bytes, pos, |b| b == b',' || b == b' ' || b == b'\t');
    let measurement = &line[pos..end];
    if measurement.is_empty() {
        return Err(element_error("measurement", "is missing"));
    }
    pos = end;

    let mut sensor: Option<&str> = None;
    while pos < bytes.len() && bytes[pos] == b',' {
        pos += 1;
        let key_end = scan(bytes, pos, |b| b == b'=' || b == b',' || b == b' ');
        let key = &line[pos..key_end];
        if key_end >= bytes.len() || bytes[key_end] != b'=' {
            return Err(element_error(format!("tag {key}"), "has no `=value`"));
        }
        if key.is_empty() {
            return Err(element_error("tag", "has an empty name"));
        }
        pos = key_end + 1;
        let value_end = scan(bytes, pos, |b| b == b',' || b == b' ' || b == b'\t');
        let value = &line[pos..value_end];
        if value.is_empty() {
            return Err(element_error(format!("tag {key}"), "has an empty value"));
        }
        if unescape(key) == options.sensor_tag.as_str() {
            sensor = Some(value);
        }
        pos = value_end;
    }

    let fields_start = skip_blanks(bytes, pos);
    if fields_start == pos {
        return Err(element_error("", "expected a space before the fields"));
    }
    pos = fields_start;
    if pos >= bytes.len() {
        return Err(element_error("", "has no fields"));
    }

    let Some(sensor) = sensor else {
        return Err(element_error(
            format!("tag {}", options.sensor_tag),
            format!(
                "is missing: the `{}` tag names the sensor (setting ingest.line_protocol_sensor_tag)",
                options.sensor_tag
            ),
        ));
    };
    let sensor = unescape(sensor);
    validate_sensor_key(&sensor)
        .map_err(|m| element_error(format!("tag {}", options.sensor_tag), m))?;

    // Fields.
    loop {
        let key_end = scan(bytes, pos, |b| b == b'=' || b == b',' || b == b' ');
        let key = unescape(&line[pos..key_end]);
        if key_end >= bytes.len() || bytes[key_end] != b'=' {
            return Err(element_error(format!("field {key}"), "has no `=value`"));
        }
        if key.is_empty() {
            return Err(element_error("field", "has an empty name"));
        }
        pos = key_end + 1;
        let label = || format!("field {key}");
        if bytes.get(pos) == Some(&b'"') {
            // Skip the string (escapes `\"` and `\\`) only to report it.
            let mut i = pos + 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            if i >= bytes.len() {
                return Err(element_error(label(), "has an unterminated string"));
            }
            return Err(element_error(
                label(),
                "is a string; only numbers and booleans can be readings",
            ));
        }
        let value_end = scan_plain(bytes, pos);
        let value =
            parse_field_value(&line[pos..value_end]).map_err(|m| element_error(label(), m))?;
        check_value(value).map_err(|m| element_error(label(), m))?;
        let metric = if key == "value" {
            unescape(measurement).into_owned()
        } else {
            key.to_string()
        };
        check_metric(&metric)
            .map_err(|m| element_error(label(), format!("names metric `{metric}`, which {m}")))?;
        out.fields.push((metric, value));
        pos = value_end;
        match bytes.get(pos) {
            Some(b',') => pos += 1,
            _ => break,
        }
    }

    // Timestamp.
    let ts_start = skip_blanks(bytes, pos);
    let ts = if ts_start >= bytes.len() {
        if ts_start == pos && pos < bytes.len() {
            return Err(element_error("", "unexpected text after the fields"));
        }
        now
    } else {
        if ts_start == pos {
            return Err(element_error("", "unexpected text after the fields"));
        }
        let ts_end = scan_plain(bytes, ts_start);
        if skip_blanks(bytes, ts_end) < bytes.len() {
            return Err(element_error("", "unexpected text after the timestamp"));
        }
        let text = &line[ts_start..ts_end];
        let raw = Some(text)
            .filter(|t| !t.starts_with('+'))
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| element_error("timestamp", "must be an integer"))?;
        let ms = options
            .precision
            .to_millis(raw)
            .ok_or_else(|| element_error("timestamp", "is out of range for its precision"))?;
        let ts = Timestamp(ms);
        check_ts(ts, now, limits).map_err(|m| element_error("timestamp", m))?;
        ts
    };

    out.sensor.clear();
    out.sensor.push_str(&sensor);
    out.ts = ts;
    Ok(())
}

/// Numbers (`1`, `-1.5`, `1e3`), integers (`1i`), unsigned (`1u`), booleans.
fn parse_field_value(text: &str) -> Result<f64, &'static str> {
    match text {
        "" => return Err("has no value"),
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(0.0),
        _ => {}
    }
    let bad = "must be a number (1.5, 2i, 3u) or a boolean";
    if let Some(int) = text.strip_suffix('i') {
        return int.parse::<i64>().map(|v| v as f64).map_err(|_| bad);
    }
    if let Some(uint) = text.strip_suffix('u') {
        return uint.parse::<u64>().map(|v| v as f64).map_err(|_| bad);
    }
    // Rust also parses `inf`, `NaN` and `+1`; line protocol has none of them.
    let first = text.as_bytes()[0];
    if !(first.is_ascii_digit() || first == b'-' || first == b'.') {
        return Err(bad);
    }
    text.parse::<f64>().map_err(|_| bad)
}

/// Refuses two readings of one sensor, metric and millisecond with different values;
/// identical repeats are harmless (the store keeps one, and it is what both said).
fn find_conflicts(
    readings: &[Reading],
    origins: &[u32],
    errors: &mut Vec<LineError>,
    lines_with_errors: &mut usize,
) {
    if readings.len() < 2 {
        return;
    }
    let mut seen: HashMap<(&str, &str, i64), usize> = HashMap::with_capacity(readings.len());
    let mut flagged = std::collections::HashSet::new();
    for (i, r) in readings.iter().enumerate() {
        if let Some(&first) = seen.get(&(r.sensor.as_str(), r.metric.as_str(), r.ts.0)) {
            if readings[first].value.to_bits() != r.value.to_bits() && flagged.insert(origins[i]) {
                *lines_with_errors += 1;
                if errors.len() < MAX_LISTED_ERRORS * 2 {
                    errors.push(LineError {
                        line: origins[i] as usize,
                        field: format!("field {}", r.metric),
                        message: format!(
                            "sensor {} has another value for {} at {} (line {}); one would \
                             overwrite the other",
                            r.sensor,
                            r.metric,
                            r.ts.to_rfc3339(),
                            origins[first]
                        ),
                    });
                }
            }
        } else {
            seen.insert((r.sensor.as_str(), r.metric.as_str(), r.ts.0), i);
        }
    }
}

/// The end of an element that may hold escapes: the first byte at or after `from` that
/// `stop` accepts and no backslash escapes.
#[inline]
fn scan(line: &[u8], from: usize, stop: impl Fn(u8) -> bool) -> usize {
    let mut i = from;
    while i < line.len() {
        let b = line[i];
        if b == b'\\' {
            i += 2;
            continue;
        }
        if stop(b) {
            return i;
        }
        i += 1;
    }
    line.len()
}

/// The end of a field value or timestamp (no escapes there).
#[inline]
fn scan_plain(line: &[u8], from: usize) -> usize {
    line[from..]
        .iter()
        .position(|&b| b == b',' || b == b' ' || b == b'\t')
        .map_or(line.len(), |p| from + p)
}

fn skip_blanks(line: &[u8], from: usize) -> usize {
    line[from.min(line.len())..]
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .map_or(line.len(), |p| from + p)
}

fn trim_start(line: &[u8]) -> &[u8] {
    let start = line
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(line.len());
    &line[start..]
}

/// Removes backslash escapes (`\,`, `\=`, `\ `, `\\`, `\"`); a backslash before anything
/// else stays, as InfluxDB reads it. Borrows when there is nothing to remove.
fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&next) = chars.peek() {
                if matches!(next, ',' | '=' | ' ' | '\\' | '"') {
                    out.push(next);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_795_428_000_000);

    fn decode(body: &str) -> Result<Vec<Reading>, LineProtocolError> {
        decode_line_protocol(
            body.as_bytes(),
            NOW,
            &DecodeLimits::default(),
            &LineProtocolOptions::default(),
        )
    }

    fn reading(sensor: &str, metric: &str, ts: i64, value: f64) -> Reading {
        Reading {
            sensor: sensor.into(),
            metric: metric.into(),
            ts: Timestamp(ts),
            value,
        }
    }

    fn line_errors(body: &str) -> Vec<(usize, String)> {
        match decode(body) {
            Err(LineProtocolError::Invalid { errors, .. }) => {
                errors.into_iter().map(|e| (e.line, e.field)).collect()
            }
            other => panic!("expected line errors, got {other:?}"),
        }
    }

    #[test]
    fn fields_become_metrics_and_value_takes_the_measurement() {
        let ts_ns = NOW.0 * 1_000_000 - 5_000_123_456;
        let body = format!(
            "temperature,sensor=CF-1,site=plant\\ 2 value=-18.5 {ts_ns}\n\
             room,sensor=REF-3 humidity=81i,door=true,count=3u {ts_ns}\n"
        );
        let ms = ts_ns.div_euclid(1_000_000);
        assert_eq!(
            decode(&body).unwrap(),
            vec![
                reading("CF-1", "temperature", ms, -18.5),
                reading("REF-3", "humidity", ms, 81.0),
                reading("REF-3", "door", ms, 1.0),
                reading("REF-3", "count", ms, 3.0),
            ]
        );
    }

    #[test]
    fn every_value_form_parses() {
        let cases = [
            ("1", 1.0),
            ("-1.5", -1.5),
            ("1e3", 1000.0),
            ("-2E-1", -0.2),
            (".5", 0.5),
            ("12i", 12.0),
            ("-12i", -12.0),
            ("12u", 12.0),
            ("t", 1.0),
            ("TRUE", 1.0),
            ("False", 0.0),
            ("f", 0.0),
        ];
        for (text, value) in cases {
            let got = decode(&format!("m,sensor=s x={text}")).unwrap();
            assert_eq!(got[0].value, value, "{text}");
            assert_eq!(got[0].ts, NOW, "no timestamp → arrival time");
        }
    }

    #[test]
    fn escapes_comments_blank_lines_and_crlf() {
        let body = "# a comment\n\n  \r\nm\\,x,sensor=a\\,b\\ c\\=d val\\ ue=1 1\r\nvalue,sensor=s value=2 2\n";
        let got = decode_line_protocol(
            body.as_bytes(),
            NOW,
            &DecodeLimits::default(),
            &LineProtocolOptions {
                precision: Precision::Milliseconds,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                reading("a,b c=d", "val ue", 1, 1.0),
                reading("s", "value", 2, 2.0)
            ]
        );
    }

    #[test]
    fn precisions_scale_to_milliseconds() {
        let cases = [
            ("ns", 1_700_000_000_123_456_789_i64, 1_700_000_000_123_i64),
            ("us", 1_700_000_000_123_456, 1_700_000_000_123),
            ("ms", 1_700_000_000_123, 1_700_000_000_123),
            ("s", 1_700_000_000, 1_700_000_000_000),
            ("m", 28_333_333, 1_699_999_980_000),
            ("h", 472_222, 1_699_999_200_000),
            ("ns", -1, -1),
        ];
        for (p, raw, ms) in cases {
            let got = decode_line_protocol(
                format!("m,sensor=s value=1 {raw}").as_bytes(),
                NOW,
                &DecodeLimits::default(),
                &LineProtocolOptions {
                    precision: Precision::parse(p).unwrap(),
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(got[0].ts, Timestamp(ms), "{p} {raw}");
        }
        assert_eq!(Precision::parse("x"), None);
    }

    #[test]
    fn bad_lines_are_all_named_and_nothing_is_returned() {
        let body = "m,sensor=a value=1\n\
                    m value=1\n\
                    m,sensor=a s=\"text\"\n\
                    m,sensor=a value=1\n\
                    m,sensor=a x=abc\n\
                    m,sensor=a x=1 notanumber\n\
                    m,sensor=a\n\
                    ,sensor=a x=1\n\
                    m,sensor=a x=1 1 extra\n\
                    m,sensor x=1\n\
                    m,sensor=a x=1 99999999999999999999\n\
                    m,sensor=a x=inf\n\
                    m,sensor=a/b x=1\n\
                    m,sensor=a x=\"open\n";
        assert_eq!(
            line_errors(body),
            vec![
                (2, "tag sensor".into()),
                (3, "field s".into()),
                (5, "field x".into()),
                (6, "timestamp".into()),
                (7, "".into()),
                (8, "measurement".into()),
                (9, "".into()),
                (10, "tag sensor".into()),
                (11, "timestamp".into()),
                (12, "field x".into()),
                (13, "tag sensor".into()),
                (14, "field x".into()),
            ]
        );
    }

    #[test]
    fn conflicting_duplicates_are_refused_identical_ones_pass() {
        assert_eq!(
            line_errors("m,sensor=a x=1 5000000\nm,sensor=a x=2 5999999\n"),
            vec![(2, "field x".into())]
        );
        assert_eq!(
            decode("m,sensor=a x=1 5000000\nm,sensor=a x=1 5000000\n")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn too_many_readings_and_empty_bodies() {
        let limits = DecodeLimits {
            max_rows: 3,
            ..Default::default()
        };
        let body = "m,sensor=a x=1,y=2 1\nm,sensor=a x=1,y=2 2\nm,sensor=a x=1 3\n";
        assert_eq!(
            decode_line_protocol(body.as_bytes(), NOW, &limits, &Default::default()),
            Err(LineProtocolError::TooManyRows {
                readings: 5,
                max: 3
            })
        );
        assert_eq!(
            decode("# only a comment\n\n"),
            Err(LineProtocolError::Empty)
        );
        assert_eq!(decode(""), Err(LineProtocolError::Empty));
    }

    #[test]
    fn future_timestamps_are_refused() {
        let tomorrow = (NOW.0 + 25 * 3_600_000) * 1_000_000;
        assert_eq!(
            line_errors(&format!("m,sensor=a x=1 {tomorrow}")),
            vec![(1, "timestamp".into())]
        );
    }

    #[test]
    fn the_sensor_tag_is_configurable() {
        let options = LineProtocolOptions {
            sensor_tag: "host".into(),
            ..Default::default()
        };
        let got = decode_line_protocol(
            b"cpu,host=gw-7 usage_idle=93.5",
            NOW,
            &DecodeLimits::default(),
            &options,
        )
        .unwrap();
        assert_eq!(got, vec![reading("gw-7", "usage_idle", NOW.0, 93.5)]);
    }

    #[test]
    fn errors_list_at_most_the_limit_but_count_all() {
        let body = "bad\n".repeat(MAX_LISTED_ERRORS + 20);
        match decode(&body) {
            Err(LineProtocolError::Invalid {
                errors,
                lines_with_errors,
            }) => {
                assert_eq!(errors.len(), MAX_LISTED_ERRORS);
                assert_eq!(lines_with_errors, MAX_LISTED_ERRORS + 20);
            }
            other => panic!("{other:?}"),
        }
    }
}
