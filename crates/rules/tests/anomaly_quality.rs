//! How well the anomaly rule finds labelled anomalies in deterministic synthetic data.
//!
//! Each labelled sensor reads every 5 s for 12 h at its own level (-25 to 5) with white
//! Gaussian noise (σ from 0.1 to 0.5, quantised to 0.01, as a real probe reports) and
//! holds one event starting between 3 h and 8 h (after the 1 h warm-up):
//! - **spike**: 1 to 3 readings 8–15 σ off;
//! - **level shift**: the level moves 5–10 σ for good;
//! - **drift**: the level moves 8–15 σ over 90 min, then stays;
//! - **stuck**: the value freezes for 45 min (the default flat line is 30 min), then
//!   noise resumes.
//!
//! An alert is a true positive when it opens inside its event's attribution window: the
//! event itself plus the time the model takes to settle on the new normal (the return
//! from an anomaly, or the short-term level catching up, is part of the same story):
//! 10 min after a spike, 2 h after a shift, 2 h after a drift ends, 1 h after a stuck
//! sensor resumes. Any other alert is false. Recall counts events with at least one true
//! alert. Noise-only sensors run 24 h each and count false alerts per sensor-day.
//!
//! Run with `cargo test -p vigia-rules --test anomaly_quality -- --nocapture` to see the
//! figures.

use vigia_core::Rule;
use vigia_rules::{evaluate, EngineConfig, SensorState, Transition};

/// SplitMix64: a small, seeded, portable generator, so the figures never change.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box–Muller).
    fn gaussian(&mut self) -> f64 {
        let u = self.unit().max(f64::MIN_POSITIVE);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    fn sign(&mut self) -> f64 {
        if self.unit() < 0.5 {
            -1.0
        } else {
            1.0
        }
    }
}

const STEP_MS: i64 = 5_000;
const MIN_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Spike,
    LevelShift,
    Drift,
    Stuck,
}

const KINDS: [Kind; 4] = [Kind::Spike, Kind::LevelShift, Kind::Drift, Kind::Stuck];

/// One synthetic sensor: its readings and, if labelled, the window alerts are
/// attributed to.
struct Series {
    readings: Vec<(i64, f64)>,
    attribution: Option<(i64, i64)>,
}

fn quantised(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn series(rng: &mut Rng, kind: Option<Kind>, hours: i64) -> Series {
    let level = rng.between(-25.0, 5.0);
    let sigma = rng.between(0.1, 0.5);
    let n = hours * HOUR_MS / STEP_MS;
    let start = (rng.between(3.0, 8.0) * HOUR_MS as f64) as i64 / STEP_MS * STEP_MS;
    let spike_len = 1 + (rng.unit() * 3.0) as i64;
    let spike = rng.sign() * rng.between(8.0, 15.0) * sigma;
    let shift = rng.sign() * rng.between(5.0, 10.0) * sigma;
    let drift = rng.sign() * rng.between(8.0, 15.0) * sigma;
    let drift_ms = 90 * MIN_MS;
    let stuck_ms = 45 * MIN_MS;
    let mut readings = Vec::with_capacity(n as usize);
    let mut frozen = None;
    for i in 0..n {
        let ts = i * STEP_MS;
        let since = ts - start;
        let mut v = level + sigma * rng.gaussian();
        match kind {
            Some(Kind::Spike) if (0..spike_len * STEP_MS).contains(&since) => v += spike,
            Some(Kind::LevelShift) if since >= 0 => v += shift,
            Some(Kind::Drift) if since >= 0 => {
                v += drift * (since as f64 / drift_ms as f64).min(1.0)
            }
            Some(Kind::Stuck) if (0..stuck_ms).contains(&since) => {
                v = *frozen.get_or_insert(v);
            }
            _ => {}
        }
        readings.push((ts, quantised(v)));
    }
    let attribution = kind.map(|k| {
        let end = match k {
            Kind::Spike => spike_len * STEP_MS + 10 * MIN_MS,
            Kind::LevelShift => 2 * HOUR_MS,
            Kind::Drift => drift_ms + 2 * HOUR_MS,
            Kind::Stuck => stuck_ms + HOUR_MS,
        };
        (start, start + end)
    });
    Series {
        readings,
        attribution,
    }
}

/// Event times of the alerts the rule opens on a series.
fn opens(rules: &[Rule], series: &Series) -> Vec<i64> {
    let cfg = EngineConfig::default();
    let mut state = SensorState::new();
    let mut out = Vec::new();
    for &(ts, v) in &series.readings {
        evaluate(&cfg, &mut state, "S", rules, "temperature", ts, v, &mut out);
    }
    out.iter()
        .filter_map(|t| match t {
            Transition::Open { ts, .. } => Some(*ts),
            Transition::Resolve { .. } => None,
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    events: usize,
    found: usize,
    alerts: usize,
    true_alerts: usize,
}

impl Tally {
    fn precision(&self) -> f64 {
        if self.alerts == 0 {
            1.0
        } else {
            self.true_alerts as f64 / self.alerts as f64
        }
    }

    fn recall(&self) -> f64 {
        self.found as f64 / self.events as f64
    }
}

/// Labelled sensors per anomaly kind, and noise-only sensors (a day each).
const SENSORS_PER_KIND: usize = 50;
const NOISE_SENSORS: usize = 50;
/// The most false alerts per sensor-day on noise alone the test accepts.
const MAX_FALSE_PER_SENSOR_DAY: f64 = 0.1;

#[test]
fn anomaly_rule_precision_recall_and_false_alerts() {
    let mut rules: Vec<Rule> =
        serde_json::from_str(r#"[{"kind":"anomaly","name":"odd","warmup":"1h"}]"#).unwrap();
    let mut errors = Vec::new();
    vigia_core::rule::normalise_rules(&mut rules, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");

    let mut rng = Rng(0x5EED_0015);
    let mut all = Tally::default();
    println!("anomaly rule (sensitivity 1, warmup 1h), {SENSORS_PER_KIND} sensors per kind, 12 h each at 5 s:");
    for kind in KINDS {
        let mut tally = Tally::default();
        for _ in 0..SENSORS_PER_KIND {
            let s = series(&mut rng, Some(kind), 12);
            let (from, to) = s.attribution.expect("labelled");
            let alerts = opens(&rules, &s);
            let true_alerts = alerts.iter().filter(|&&t| (from..=to).contains(&t)).count();
            tally.events += 1;
            tally.found += usize::from(true_alerts > 0);
            tally.alerts += alerts.len();
            tally.true_alerts += true_alerts;
        }
        println!(
            "  {kind:?}: precision {:.3} ({}/{} alerts), recall {:.3} ({}/{} events)",
            tally.precision(),
            tally.true_alerts,
            tally.alerts,
            tally.recall(),
            tally.found,
            tally.events
        );
        assert!(
            tally.precision() >= 0.9,
            "{kind:?} precision {:.3}",
            tally.precision()
        );
        assert!(
            tally.recall() >= 0.9,
            "{kind:?} recall {:.3}",
            tally.recall()
        );
        all.events += tally.events;
        all.found += tally.found;
        all.alerts += tally.alerts;
        all.true_alerts += tally.true_alerts;
    }
    println!(
        "  all kinds: precision {:.3}, recall {:.3}",
        all.precision(),
        all.recall()
    );

    let false_alerts: usize = (0..NOISE_SENSORS)
        .map(|_| opens(&rules, &series(&mut rng, None, 24)).len())
        .sum();
    let per_sensor_day = false_alerts as f64 / NOISE_SENSORS as f64;
    println!(
        "  noise only: {false_alerts} false alerts over {NOISE_SENSORS} sensor-days = {per_sensor_day:.3} per sensor-day"
    );
    assert!(
        per_sensor_day <= MAX_FALSE_PER_SENSOR_DAY,
        "{per_sensor_day:.3} false alerts per sensor-day"
    );
}
