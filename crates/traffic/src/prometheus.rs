//! Reading the server's `/metrics` page (Prometheus text format) into plain numbers.
//!
//! The traffic clients need a handful of counters and gauges, summed over their label
//! sets; they do not need types, help text or histograms, so this is a small tolerant
//! line parser rather than a full exposition-format implementation.

use std::collections::HashMap;

/// Readings accepted with 202 by ingest.
pub const INGEST_READINGS_TOTAL: &str = "vigia_ingest_readings_total";
/// Readings committed to the store, duplicates excluded.
pub const STORE_READINGS_WRITTEN_TOTAL: &str = "vigia_store_readings_written_total";
/// Readings waiting on the bus between ingest and the workers.
pub const BUS_DEPTH_READINGS: &str = "vigia_bus_depth_readings";
/// The server's resident set size now.
pub const RESIDENT_MEMORY_BYTES: &str = "vigia_process_resident_memory_bytes";
/// The server's peak resident set size since it started (VmHWM).
pub const PEAK_RESIDENT_MEMORY_BYTES: &str = "vigia_process_peak_resident_memory_bytes";

/// One scrape of `/metrics`: every sample's value, summed per metric name over its
/// label sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    values: HashMap<String, f64>,
}

impl MetricsSnapshot {
    /// Parses exposition text. Comments, blank lines and lines that do not parse are
    /// skipped: a scrape with one odd line still yields the metrics we need.
    pub fn parse(text: &str) -> Self {
        let mut values: HashMap<String, f64> = HashMap::new();
        for line in text.lines() {
            if let Some((name, value)) = parse_sample(line) {
                *values.entry(name.to_string()).or_insert(0.0) += value;
            }
        }
        Self { values }
    }

    /// The summed value of `name`, or `None` when the server does not export it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }
}

/// Splits one sample line `name{labels} value [timestamp]` into its name and value.
fn parse_sample(line: &str) -> Option<(&str, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        rest = &rest[label_block_len(rest)?..];
    }
    let value = rest.split_whitespace().next()?;
    Some((name, parse_value(value)?))
}

/// Length of the `{…}` block at the start of `text`, honouring quoted label values
/// (which may hold `}`, spaces and escaped quotes).
fn label_block_len(text: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(i + 1),
            _ => {}
        }
    }
    None
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP vigia_ingest_readings_total Readings accepted.
# TYPE vigia_ingest_readings_total counter
vigia_ingest_readings_total{tenant="1",decoder="json"} 1500
vigia_ingest_readings_total{tenant="2",decoder="json"} 500
vigia_store_readings_written_total 1999
vigia_bus_depth_readings 12 1700000000000
vigia_process_resident_memory_bytes 4.2e7
weird{path="/a}b c",note="say \"hi\" }"} 3
weird{path="x"} 4

vigia_http_requests_duration_seconds_bucket{le="+Inf"} 7
broken{label="unterminated 5
novalue
vigia_bad_value notanumber
"#;

    #[test]
    fn sums_label_sets_and_skips_noise() {
        let m = MetricsSnapshot::parse(SCRAPE);
        let cases: &[(&str, Option<f64>)] = &[
            (INGEST_READINGS_TOTAL, Some(2000.0)),
            (STORE_READINGS_WRITTEN_TOTAL, Some(1999.0)),
            (BUS_DEPTH_READINGS, Some(12.0)),
            (RESIDENT_MEMORY_BYTES, Some(42_000_000.0)),
            ("weird", Some(7.0)),
            ("vigia_http_requests_duration_seconds_bucket", Some(7.0)),
            ("broken", None),
            ("novalue", None),
            ("vigia_bad_value", None),
            (PEAK_RESIDENT_MEMORY_BYTES, None),
        ];
        for (name, want) in cases {
            assert_eq!(m.get(name), *want, "{name}");
        }
    }

    #[test]
    fn special_values() {
        let m = MetricsSnapshot::parse("a +Inf\nb -Inf\nc NaN\n");
        assert_eq!(m.get("a"), Some(f64::INFINITY));
        assert_eq!(m.get("b"), Some(f64::NEG_INFINITY));
        assert!(m.get("c").expect("c present").is_nan());
    }

    #[test]
    fn empty_scrape_has_nothing() {
        assert_eq!(MetricsSnapshot::parse(""), MetricsSnapshot::default());
        assert_eq!(
            MetricsSnapshot::parse("# only comments\n\n"),
            MetricsSnapshot::default()
        );
    }
}
