//! The benchmark's figures: what was measured, as data (for `--json`) and as a table a
//! person can read, with the ratios and budgets of DESIGN §7 beside them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::format::{count, errors_cell, mb, ms, secs, spawned_line, TableReport};
use super::load::LatencySummary;

/// The HTTP floor: back-to-back `GET /healthz`, the most a POST could ever reach here.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    /// The path requested (`/healthz`).
    pub path: String,
    /// How long the baseline ran.
    pub seconds: f64,
    /// Requests answered 200.
    pub requests: u64,
    /// `requests / seconds`.
    pub requests_per_sec: f64,
    /// Latency of the 200 answers.
    pub latency: Option<LatencySummary>,
    /// Failed requests by status or transport failure.
    pub errors: BTreeMap<String, u64>,
}

/// When everything the server accepted was committed to the store.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CommitReport {
    /// Readings committed since the mode started (growth of
    /// `vigia_store_readings_written_total`).
    pub committed: u64,
    /// Whether every accepted reading was seen committed.
    pub complete: bool,
    /// First request sent → all committed (or → the last growth seen, if incomplete).
    pub seconds: Option<f64>,
    /// `committed / seconds`: the end-to-end figure.
    pub end_to_end_readings_per_sec: Option<f64>,
    /// Why the figure is missing or partial.
    pub note: Option<String>,
}

/// One measured mode (single-reading or batched requests).
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    /// `single` or `batched`.
    pub mode: String,
    /// Readings in each request (the last batched one may hold fewer).
    pub readings_per_request: usize,
    /// Requests the mode set out to send.
    pub requests_planned: u64,
    /// Requests answered 202.
    pub requests_accepted: u64,
    /// Readings in the requests answered 202.
    pub readings_accepted: u64,
    /// First request sent → last answer received.
    pub send_seconds: f64,
    /// 202s per second over the send phase.
    pub requests_per_sec: f64,
    /// Readings accepted per second over the send phase.
    pub readings_accepted_per_sec: f64,
    /// When the accepted readings were committed.
    pub commit: CommitReport,
    /// Latency of the 202 answers.
    pub latency: Option<LatencySummary>,
    /// Requests resent after 503/429.
    pub retries: u64,
    /// Failed requests by status (`"400"`) or transport failure (`"connect"`).
    pub errors: BTreeMap<String, u64>,
    /// The first failure's problem body or error text.
    pub first_problem: Option<String>,
    /// Largest `vigia_bus_depth_readings` seen while sending and committing.
    pub bus_depth_peak: Option<f64>,
}

/// The server's memory, from its own `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryReport {
    /// RSS before the first mode.
    pub rss_before_bytes: Option<f64>,
    /// Peak RSS (VmHWM) since the server started, before the first mode.
    pub peak_rss_before_bytes: Option<f64>,
    /// RSS after the last mode.
    pub rss_after_bytes: Option<f64>,
    /// Peak RSS (VmHWM) since the server started, after the last mode.
    pub peak_rss_after_bytes: Option<f64>,
    /// Largest RSS sampled during the modes.
    pub rss_max_seen_bytes: Option<f64>,
}

/// One process of the measured deployment, at the end of the run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    /// Its `--roles`.
    pub roles: String,
    /// Where it listens.
    pub url: String,
    /// Peak RSS (VmHWM) since it started.
    pub peak_rss_bytes: Option<f64>,
    /// Readings it committed since it started.
    pub readings_written: Option<f64>,
}

/// Everything `vigia bench ingest` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The server measured.
    pub url: String,
    /// Workers, one connection each.
    pub concurrency: usize,
    /// Distinct sensor keys in the readings.
    pub sensors: usize,
    /// Data dir of the server started by `--spawn`.
    pub spawned_data_dir: Option<PathBuf>,
    /// Every process of the deployment (one unless `--processes` started several).
    pub processes: Vec<ProcessReport>,
    /// The same batched rows loaded by `psql` COPY, when the store is PostgreSQL.
    pub copy_baseline: Option<super::CopyBaselineReport>,
    /// Batched end-to-end readings/s divided by the COPY baseline's rows/s.
    pub batched_vs_copy: Option<f64>,
    /// The `GET /healthz` floor, unless skipped with `--baseline 0s`.
    pub baseline: Option<BaselineReport>,
    /// One reading per request.
    pub single: Option<ModeReport>,
    /// `--batch-size` readings per request.
    pub batched: Option<ModeReport>,
    /// Single-reading requests/s divided by the baseline's requests/s.
    pub single_vs_baseline: Option<f64>,
    /// The server's memory before, during and after.
    pub memory: MemoryReport,
}

impl TableReport for BenchReport {
    fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Vigía ingest benchmark — {}, {} connections, {} sensors",
            self.url, self.concurrency, self.sensors
        );
        spawned_line(&mut out, self.spawned_data_dir.as_deref());
        if let Some(b) = &self.baseline {
            let _ = writeln!(
                out,
                "\nbaseline  GET {} for {:.1} s: {} req/s{}{}",
                b.path,
                b.seconds,
                count(b.requests_per_sec),
                b.latency
                    .map(|l| format!(", p50 {}, p99 {}", ms(l.p50_us), ms(l.p99_us)))
                    .unwrap_or_default(),
                errors_suffix(&b.errors)
            );
        }
        let modes: Vec<&ModeReport> = [&self.single, &self.batched]
            .into_iter()
            .flatten()
            .collect();
        if !modes.is_empty() {
            out.push('\n');
            let header: Vec<String> = modes.iter().map(|m| m.mode.clone()).collect();
            row(&mut out, "", &header);
            let rows: [(&str, Cell); 15] = [
                ("readings per request", |m| {
                    count(m.readings_per_request as f64)
                }),
                ("requests accepted (202)", |m| {
                    format!(
                        "{} / {}",
                        count(m.requests_accepted as f64),
                        count(m.requests_planned as f64)
                    )
                }),
                ("send phase", |m| secs(m.send_seconds)),
                ("requests/s", |m| count(m.requests_per_sec)),
                ("readings accepted/s", |m| {
                    count(m.readings_accepted_per_sec)
                }),
                ("time to commit everything", commit_time),
                ("END-TO-END readings/s", |m| {
                    m.commit
                        .end_to_end_readings_per_sec
                        .map(count)
                        .unwrap_or_else(|| "—".into())
                }),
                ("latency p50", |m| latency(m, |l| l.p50_us)),
                ("latency p90", |m| latency(m, |l| l.p90_us)),
                ("latency p99", |m| latency(m, |l| l.p99_us)),
                ("latency max", |m| latency(m, |l| l.max_us)),
                ("retries (503/429)", |m| count(m.retries as f64)),
                ("errors", |m| errors_cell(&m.errors)),
                ("bus depth peak", |m| {
                    m.bus_depth_peak.map(count).unwrap_or_else(|| "—".into())
                }),
                ("committed", |m| count(m.commit.committed as f64)),
            ];
            for (label, cell) in rows {
                let cells: Vec<String> = modes.iter().map(|m| cell(m)).collect();
                row(&mut out, label, &cells);
            }
            for m in &modes {
                if let Some(note) = &m.commit.note {
                    let _ = writeln!(out, "note ({}): {note}", m.mode);
                }
                if let Some(problem) = &m.first_problem {
                    let _ = writeln!(out, "first problem ({}): {problem}", m.mode);
                }
            }
        }
        if let Some(c) = &self.copy_baseline {
            let _ = writeln!(
                out,
                "\nbaseline  psql COPY of the same {} rows: {:.2} s, {} rows/s{}",
                count(c.rows as f64),
                c.seconds,
                count(c.rows_per_sec),
                self.batched_vs_copy
                    .map(|r| format!("; batched end to end = {r:.2}× COPY"))
                    .unwrap_or_default()
            );
        }
        if let Some(ratio) = self.single_vs_baseline {
            let _ = writeln!(
                out,
                "\nsingle-reading requests/s = {ratio:.2}× the GET /healthz floor"
            );
        }
        let m = &self.memory;
        let _ = writeln!(
            out,
            "\nserver RSS: before {} (peak {}), after {} (peak {}), max sampled {}",
            mb(m.rss_before_bytes),
            mb(m.peak_rss_before_bytes),
            mb(m.rss_after_bytes),
            mb(m.peak_rss_after_bytes),
            mb(m.rss_max_seen_bytes)
        );
        if self.processes.len() > 1 {
            for p in &self.processes {
                let _ = writeln!(
                    out,
                    "process {} ({}): peak RSS {}, committed {}",
                    p.url,
                    p.roles,
                    mb(p.peak_rss_bytes),
                    p.readings_written.map(count).unwrap_or_else(|| "—".into())
                );
            }
        }
        let _ = writeln!(
            out,
            "budgets (DESIGN §7): batched ≥ 500,000 readings/s end to end, 2 million in ≤ 5 s; \
             single ≥ 50,000 requests/s with p99 ≤ 10 ms; peak RSS ≤ 100 MB"
        );
        out
    }
}

/// Renders one mode's cell of a table row.
type Cell = fn(&ModeReport) -> String;

fn row(out: &mut String, label: &str, cells: &[String]) {
    let _ = write!(out, "{label:<28}");
    for cell in cells {
        let _ = write!(out, "{cell:>24}");
    }
    out.push('\n');
}

fn commit_time(m: &ModeReport) -> String {
    match (m.commit.complete, m.commit.seconds) {
        (true, Some(s)) => secs(s),
        (true, None) => "nothing to commit".into(),
        (false, _) => format!(
            "incomplete: {} of {}",
            count(m.commit.committed as f64),
            count(m.readings_accepted as f64)
        ),
    }
}

fn latency(m: &ModeReport, pick: fn(&LatencySummary) -> u32) -> String {
    m.latency
        .as_ref()
        .map(|l| ms(pick(l)))
        .unwrap_or_else(|| "—".into())
}

fn errors_suffix(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(" (errors: {})", errors_cell(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(name: &str, complete: bool) -> ModeReport {
        ModeReport {
            mode: name.into(),
            readings_per_request: 1000,
            requests_planned: 2000,
            requests_accepted: 2000,
            readings_accepted: 2_000_000,
            send_seconds: 3.2,
            requests_per_sec: 625.0,
            readings_accepted_per_sec: 625_000.0,
            commit: CommitReport {
                committed: if complete { 2_000_000 } else { 1_500_000 },
                complete,
                seconds: Some(4.0),
                end_to_end_readings_per_sec: Some(500_000.0),
                note: (!complete).then(|| "no progress for 10 s".into()),
            },
            latency: Some(LatencySummary {
                count: 2000,
                p50_us: 80_000,
                p90_us: 90_000,
                p99_us: 99_000,
                max_us: 120_000,
            }),
            retries: 3,
            errors: BTreeMap::from([("503".to_string(), 0), ("400".to_string(), 2)]),
            first_problem: Some("400: bad".into()),
            bus_depth_peak: Some(40_000.0),
        }
    }

    #[test]
    fn the_table_holds_the_figures() {
        let report = BenchReport {
            processes: Vec::new(),
            copy_baseline: None,
            batched_vs_copy: None,
            url: "http://127.0.0.1:1".into(),
            concurrency: 64,
            sensors: 100,
            spawned_data_dir: Some("/tmp/x/data".into()),
            baseline: Some(BaselineReport {
                path: "/healthz".into(),
                seconds: 2.0,
                requests: 90_000,
                requests_per_sec: 45_000.0,
                latency: None,
                errors: BTreeMap::new(),
            }),
            single: None,
            batched: Some(mode("batched", false)),
            single_vs_baseline: Some(1.1),
            memory: MemoryReport {
                peak_rss_after_bytes: Some(97_500_000.0),
                ..Default::default()
            },
        };
        let text = report.render();
        for needle in [
            "64 connections",
            "/tmp/x/data",
            "45,000 req/s",
            "batched",
            "625,000",
            "incomplete: 1,500,000 of 2,000,000",
            "500,000",
            "80.00 ms",
            "400: 2",
            "no progress for 10 s",
            "first problem (batched): 400: bad",
            "1.10× the GET /healthz floor",
            "peak 97.5 MB",
            "budgets",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
        assert_eq!(json["batched"]["commit"]["committed"], 1_500_000);
        assert_eq!(json["single"], serde_json::Value::Null);
        assert_eq!(json["memory"]["peak_rss_after_bytes"], 97_500_000.0);
    }
}
