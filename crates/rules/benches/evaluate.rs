//! Rule evaluation throughput for a sensor with three rules (seed 000's freezer).
//!
//! Prints figures; never fails on a timing. Run with `cargo bench -p vigia-rules`.

use std::hint::black_box;
use std::time::Instant;

use vigia_core::{RateDirection, Rule, Severity};
use vigia_rules::{evaluate, EngineConfig, SensorState};

fn main() {
    let rules = vec![
        Rule::threshold(Severity::Critical, None, Some(-18.0)),
        Rule::threshold(Severity::Warning, Some(-25.0), Some(-19.0)),
        Rule::rate(Severity::Warning, 1.0, RateDirection::Both),
    ];
    let cfg = EngineConfig::default();
    let n: i64 = 5_000_000;
    // Noisy steady readings every 5 s with an excursion every ~8 hours, so the alert
    // paths are exercised too.
    let value = |i: i64| -> f64 {
        let noise = ((i * 7919) % 61) as f64 / 100.0 - 0.3;
        let excursion = if i % 6_000 < 60 { 5.0 } else { 0.0 };
        -20.0 + noise + excursion
    };
    for round in 0..3 {
        let mut state = SensorState::new();
        let mut out = Vec::new();
        let mut transitions = 0usize;
        let started = Instant::now();
        for i in 0..n {
            evaluate(
                &cfg,
                &mut state,
                "CF-1",
                &rules,
                "temperature",
                i * 5_000,
                value(i),
                &mut out,
            );
            transitions += out.len();
            out.clear();
        }
        let secs = started.elapsed().as_secs_f64();
        black_box(&state);
        println!(
            "round {round}: {n} evaluations (3 rules) in {secs:.3} s = {:.2} M evaluations/s, {:.0} ns each, {transitions} transitions",
            n as f64 / secs / 1e6,
            secs * 1e9 / n as f64,
        );
    }
}
