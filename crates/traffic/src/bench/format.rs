//! How the benchmarks present their reports, so that `bench ingest` and `bench alerts`
//! print JSON, a count, a latency or an error list the same way.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

/// A benchmark's report: a table for people, pretty JSON for machines (`--json`).
pub trait TableReport: Serialize {
    /// The human table.
    fn render(&self) -> String;

    /// Prints the human table on stdout.
    fn print(&self) {
        print!("{}", self.render());
    }

    /// The report as pretty JSON.
    fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report is plain data and always serialises")
    }

    /// Prints the report on stdout: JSON when `json`, else the table.
    fn emit(&self, json: bool) {
        if json {
            println!("{}", self.to_json());
        } else {
            self.print();
        }
    }
}

/// The line that says the measured server was one the benchmark started itself.
pub fn spawned_line(out: &mut String, data_dir: Option<&Path>) {
    if let Some(dir) = data_dir {
        let _ = writeln!(out, "spawned server, data dir {}", dir.display());
    }
}

/// A whole number with thousands separators (`1,234,567`); `—` for NaN or infinity.
pub fn count(value: f64) -> String {
    if !value.is_finite() {
        return "—".into();
    }
    let sign = if value < -0.5 { "-" } else { "" };
    format!("{sign}{}", count_u64(value.round().abs() as u64))
}

/// An exact count with thousands separators (`1,234,567`).
pub fn count_u64(value: u64) -> String {
    let digits = value.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).expect("ASCII digits"))
        .collect();
    groups.join(",")
}

/// Microseconds as milliseconds with two decimals (`1.23 ms`).
pub fn ms(micros: u32) -> String {
    format!("{:.2} ms", f64::from(micros) / 1000.0)
}

/// Seconds with two decimals (`4.00 s`).
pub fn secs(seconds: f64) -> String {
    format!("{seconds:.2} s")
}

/// Bytes as megabytes with one decimal (`97.5 MB`); `—` when unknown.
pub fn mb(bytes: Option<f64>) -> String {
    bytes.map_or_else(|| "—".into(), |b| format!("{:.1} MB", b / 1e6))
}

/// Failures by class (`400: 2, connect: 1`), or `none`.
pub fn errors_cell(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(|(class, n)| format!("{class}: {}", count_u64(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (0.4, "0"),
            (-0.4, "0"),
            (999.4, "999"),
            (1000.0, "1,000"),
            (1_234_567.0, "1,234,567"),
            (-1500.0, "-1,500"),
            (f64::NAN, "—"),
            (f64::INFINITY, "—"),
            (f64::NEG_INFINITY, "—"),
        ];
        for (value, want) in cases {
            assert_eq!(count(*value), *want, "{value}");
        }
        let exact: &[(u64, &str)] = &[
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1_234_567, "1,234,567"),
            (u64::MAX, "18,446,744,073,709,551,615"),
        ];
        for (value, want) in exact {
            assert_eq!(count_u64(*value), *want, "{value}");
        }
        assert_eq!(ms(0), "0.00 ms");
        assert_eq!(ms(1_234), "1.23 ms");
        assert_eq!(ms(20_000), "20.00 ms");
        assert_eq!(secs(4.0), "4.00 s");
        assert_eq!(mb(Some(97_500_000.0)), "97.5 MB");
        assert_eq!(mb(None), "—");
    }

    #[test]
    fn a_spawned_server_is_named_by_its_data_dir() {
        let mut out = String::new();
        spawned_line(&mut out, None);
        assert_eq!(out, "");
        spawned_line(&mut out, Some(Path::new("/tmp/x/data")));
        assert_eq!(out, "spawned server, data dir /tmp/x/data\n");
    }

    #[test]
    fn errors_are_listed_by_class() {
        assert_eq!(errors_cell(&BTreeMap::new()), "none");
        let errors = BTreeMap::from([
            ("503".to_string(), 1_500),
            ("400".to_string(), 2),
            ("connect".to_string(), 0),
        ]);
        assert_eq!(errors_cell(&errors), "400: 2, 503: 1,500, connect: 0");
    }
}
