//! The alert benchmark's figures: as data (for `--json`) and as a table a person can
//! read, with the baseline ratio and the DESIGN §7 budget beside them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::feed::FeedStats;
use crate::bench::format::{count_u64, errors_cell, ms, spawned_line, TableReport};
use crate::bench::LatencySummary;

/// DESIGN §7: reading accepted → alert on WebSocket, p99.
pub const BUDGET_P99_MS: f64 = 20.0;

/// One measured phase: the same posts, waiting for a different frame.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseReport {
    /// `alerts` or `baseline`.
    pub phase: String,
    /// The frame each sample waited for (`alert opened`, `readings`).
    pub frame: String,
    /// Samples the phase set out to take.
    pub planned: u64,
    /// Posts answered 202.
    pub accepted: u64,
    /// Accepted posts whose frame came within the wait.
    pub arrived: u64,
    /// Accepted posts whose frame never came within the wait. Must be 0.
    pub missing: u64,
    /// Frames that arrived before their 202 did (counted as 0 ms after it).
    pub frames_before_202: u64,
    /// Request sent → 202 received.
    pub sent_to_202: Option<LatencySummary>,
    /// 202 received → frame received: the budgeted path for alerts.
    pub accepted_to_ws: Option<LatencySummary>,
    /// Request sent → frame received: end to end, ingest included.
    pub sent_to_ws: Option<LatencySummary>,
    /// Failed samples by cause (status code, transport failure, `no frame`).
    pub errors: BTreeMap<String, u64>,
    /// The first failure's problem body or error text.
    pub first_problem: Option<String>,
    /// Why the phase stopped before taking every sample, if it did.
    pub stopped: Option<String>,
}

/// Everything `vigia bench alerts` measured.
#[derive(Debug, Clone, Serialize)]
pub struct AlertsReport {
    /// The server measured.
    pub url: String,
    /// Samples per phase.
    pub samples: u64,
    /// Samples in flight at once.
    pub concurrency: usize,
    /// How long a sample waits for its frame after the 202, in seconds.
    pub wait_seconds: f64,
    /// Data dir of the server started by `--spawn`.
    pub spawned_data_dir: Option<PathBuf>,
    /// The machine's 1/5/15-minute load averages before the run (Linux), since the
    /// client, the server and anything else running share its cores.
    pub load_average_before: Option<[f64; 3]>,
    /// Cores available to this process.
    pub cores: usize,
    /// Readings that open an alert, timed to the `alert` frame.
    pub alerts: PhaseReport,
    /// In-range readings on the same sensors, timed to their `readings` frame.
    pub baseline: PhaseReport,
    /// Alerts' accepted → WebSocket p99 divided by the baseline's.
    pub alert_vs_baseline_p99: Option<f64>,
    /// The same ratio at the median.
    pub alert_vs_baseline_p50: Option<f64>,
    /// What the WebSocket received.
    pub feed: FeedStats,
    /// The budget for the alerts' accepted → WebSocket p99, in milliseconds.
    pub budget_p99_ms: f64,
    /// Whether the alerts' p99 is within the budget and every alert arrived.
    pub within_budget: Option<bool>,
}

impl AlertsReport {
    /// Fills the ratios and the verdict from the phases.
    pub fn conclude(&mut self) {
        let ratio = |pick: fn(&LatencySummary) -> u32| {
            let alert = self.alerts.accepted_to_ws.as_ref().map(pick)?;
            let base = self.baseline.accepted_to_ws.as_ref().map(pick)?;
            (base > 0).then(|| f64::from(alert) / f64::from(base))
        };
        self.alert_vs_baseline_p99 = ratio(|l| l.p99_us);
        self.alert_vs_baseline_p50 = ratio(|l| l.p50_us);
        self.within_budget = self.alerts.accepted_to_ws.as_ref().map(|l| {
            f64::from(l.p99_us) / 1000.0 <= self.budget_p99_ms && self.alerts.missing == 0
        });
    }
}

impl TableReport for AlertsReport {
    fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Vigía alert latency benchmark — {}, {} samples a phase, concurrency {}",
            self.url,
            count_u64(self.samples),
            self.concurrency
        );
        spawned_line(&mut out, self.spawned_data_dir.as_deref());
        let load = match self.load_average_before {
            Some([a, b, c]) => format!("load average before the run {a:.2} {b:.2} {c:.2}, "),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "{load}{} cores shared by client and server",
            self.cores
        );

        let _ = writeln!(
            out,
            "\n{:<46}{:>10}{:>10}{:>10}{:>10}{:>9}",
            "", "p50", "p90", "p99", "max", "n"
        );
        let rows = [
            (
                "ALERT    202 → alert on WebSocket",
                &self.alerts.accepted_to_ws,
            ),
            (
                "ALERT    sent → alert on WebSocket (e2e)",
                &self.alerts.sent_to_ws,
            ),
            ("ALERT    sent → 202", &self.alerts.sent_to_202),
            (
                "BASELINE 202 → readings on WebSocket",
                &self.baseline.accepted_to_ws,
            ),
            (
                "BASELINE sent → readings on WebSocket",
                &self.baseline.sent_to_ws,
            ),
            ("BASELINE sent → 202", &self.baseline.sent_to_202),
        ];
        for (label, summary) in rows {
            latency_row(&mut out, label, summary.as_ref());
        }

        out.push('\n');
        for p in [&self.alerts, &self.baseline] {
            let _ = writeln!(
                out,
                "{:<9}{} of {} accepted, {} {} frames arrived, {} MISSING (no frame within {:.1} s), \
                 {} frames came before their 202",
                p.phase,
                count_u64(p.accepted),
                count_u64(p.planned),
                count_u64(p.arrived),
                p.frame,
                count_u64(p.missing),
                self.wait_seconds,
                count_u64(p.frames_before_202),
            );
            let _ = writeln!(out, "{:<9}errors: {}", "", errors_cell(&p.errors));
            if let Some(problem) = &p.first_problem {
                let _ = writeln!(out, "{:<9}first problem: {problem}", "");
            }
            if let Some(stopped) = &p.stopped {
                let _ = writeln!(out, "{:<9}STOPPED EARLY: {stopped}", "");
            }
        }
        let f = &self.feed;
        let _ = writeln!(
            out,
            "feed: {} frames, {} events missed (lagged), {} unparsable{}",
            count_u64(f.frames),
            count_u64(f.lagged_missed),
            count_u64(f.unparsable),
            f.ended
                .as_ref()
                .map(|e| format!(", ended early: {e}"))
                .unwrap_or_default()
        );

        if let (Some(p50), Some(p99)) = (self.alert_vs_baseline_p50, self.alert_vs_baseline_p99) {
            let _ = writeln!(
                out,
                "\n202 → alert on WebSocket = {p50:.2}× the readings-frame baseline at p50, {p99:.2}× at p99"
            );
        }
        let verdict = match self.within_budget {
            Some(true) => "WITHIN budget",
            Some(false) if self.alerts.missing > 0 => "OVER budget (alerts missing)",
            Some(false) => "OVER budget",
            None => "not measured (no alert arrived)",
        };
        let _ = writeln!(
            out,
            "budget (DESIGN §7): reading accepted → alert on WebSocket p99 ≤ {} ms: {verdict}",
            self.budget_p99_ms
        );
        out
    }
}

fn latency_row(out: &mut String, label: &str, summary: Option<&LatencySummary>) {
    let _ = write!(out, "{label:<46}");
    match summary {
        Some(l) => {
            for us in [l.p50_us, l.p90_us, l.p99_us, l.max_us] {
                let _ = write!(out, "{:>10}", ms(us));
            }
            let _ = writeln!(out, "{:>9}", count_u64(l.count));
        }
        None => {
            let _ = writeln!(out, "{:>10}", "—");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p50_us: u32, p99_us: u32) -> Option<LatencySummary> {
        Some(LatencySummary {
            count: 1000,
            p50_us,
            p90_us: p50_us,
            p99_us,
            max_us: p99_us * 2,
        })
    }

    fn phase(name: &str, p50_us: u32, p99_us: u32, missing: u64) -> PhaseReport {
        PhaseReport {
            phase: name.into(),
            frame: if name == "alerts" {
                "alert opened"
            } else {
                "readings"
            }
            .into(),
            planned: 1000,
            accepted: 1000,
            arrived: 1000 - missing,
            missing,
            frames_before_202: 3,
            sent_to_202: summary(500, 900),
            accepted_to_ws: summary(p50_us, p99_us),
            sent_to_ws: summary(p50_us + 500, p99_us + 900),
            errors: if missing > 0 {
                BTreeMap::from([("no frame".to_string(), missing)])
            } else {
                BTreeMap::new()
            },
            first_problem: None,
            stopped: None,
        }
    }

    fn report(alerts: PhaseReport, baseline: PhaseReport) -> AlertsReport {
        let mut r = AlertsReport {
            url: "http://127.0.0.1:1".into(),
            samples: 1000,
            concurrency: 1,
            wait_seconds: 5.0,
            spawned_data_dir: Some("/tmp/x/data".into()),
            load_average_before: Some([2.65, 2.5, 1.0]),
            cores: 2,
            alerts,
            baseline,
            alert_vs_baseline_p99: None,
            alert_vs_baseline_p50: None,
            feed: FeedStats {
                frames: 4000,
                ..Default::default()
            },
            budget_p99_ms: BUDGET_P99_MS,
            within_budget: None,
        };
        r.conclude();
        r
    }

    #[test]
    fn ratios_and_verdicts() {
        // (alert p99 µs, baseline p99 µs, missing alerts) → (p99 ratio, within budget)
        type Case = (u32, u32, u64, Option<f64>, Option<bool>);
        let cases: &[Case] = &[
            (3_000, 2_000, 0, Some(1.5), Some(true)),
            (20_000, 10_000, 0, Some(2.0), Some(true)),
            (20_001, 10_000, 0, Some(2.0001), Some(false)),
            (3_000, 2_000, 1, Some(1.5), Some(false)),
            (3_000, 0, 0, None, Some(true)),
        ];
        for &(alert_p99, base_p99, missing, ratio, within) in cases {
            let r = report(
                phase("alerts", 1_000, alert_p99, missing),
                phase("baseline", 500, base_p99, 0),
            );
            assert_eq!(r.alert_vs_baseline_p99, ratio, "{alert_p99}/{base_p99}");
            assert_eq!(r.within_budget, within, "{alert_p99} missing {missing}");
        }
        let mut none = phase("alerts", 0, 0, 1000);
        none.accepted_to_ws = None;
        let r = report(none, phase("baseline", 500, 900, 0));
        assert_eq!((r.alert_vs_baseline_p99, r.within_budget), (None, None));
        assert!(r.render().contains("not measured"), "{}", r.render());
    }

    #[test]
    fn the_table_holds_the_figures() {
        let mut alerts = phase("alerts", 1_500, 3_250, 2);
        alerts.stopped = Some("the feed ended".into());
        alerts.first_problem = Some("503: busy".into());
        let r = report(alerts, phase("baseline", 1_000, 2_500, 0));
        let text = r.render();
        for needle in [
            "1,000 samples a phase, concurrency 1",
            "/tmp/x/data",
            "load average before the run 2.65 2.50 1.00, 2 cores",
            "ALERT    202 → alert on WebSocket",
            "1.50 ms",
            "3.25 ms",
            "6.50 ms",
            "BASELINE 202 → readings on WebSocket",
            "2 MISSING (no frame within 5.0 s)",
            "no frame: 2",
            "3 frames came before their 202",
            "first problem: 503: busy",
            "STOPPED EARLY: the feed ended",
            "feed: 4,000 frames",
            "1.50× the readings-frame baseline at p50, 1.30× at p99",
            "OVER budget (alerts missing)",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).expect("json");
        assert_eq!(json["alerts"]["missing"], 2);
        assert_eq!(json["alerts"]["accepted_to_ws"]["p99_us"], 3_250);
        assert_eq!(json["baseline"]["frame"], "readings");
        assert_eq!(json["within_budget"], false);
        assert_eq!(json["budget_p99_ms"], 20.0);
    }
}
