//! The rule engine's semantics as data: reading sequences in, alert transitions out.

use vigia_core::{RateDirection, Rule, RuleKind, Severity};
use vigia_rules::{evaluate, EngineConfig, SensorState, Transition};

/// `(seconds, value)` readings.
type Series = Vec<(f64, f64)>;

/// Name, config, rules, readings, expected transitions.
type ThresholdCase<'a> = (&'a str, &'a EngineConfig, &'a [Rule], Series, Vec<&'a str>);

fn threshold(name: &str, min: Option<f64>, max: Option<f64>) -> Rule {
    let mut r = Rule::threshold(Severity::Critical, min, max);
    r.name = name.into();
    r
}

fn rate(name: &str, max_per_min: f64, direction: RateDirection) -> Rule {
    let mut r = Rule::rate(Severity::Warning, max_per_min, direction);
    r.name = name.into();
    r
}

/// Runs `(seconds, value)` temperature readings through a fresh state and renders the
/// transitions as `open <rule> @<seconds>` / `resolve <rule> @<seconds>`.
fn run(cfg: &EngineConfig, rules: &[Rule], readings: &[(f64, f64)]) -> Vec<String> {
    let mut state = SensorState::new();
    run_on(&mut state, cfg, rules, readings)
}

fn run_on(
    state: &mut SensorState,
    cfg: &EngineConfig,
    rules: &[Rule],
    readings: &[(f64, f64)],
) -> Vec<String> {
    let mut out = Vec::new();
    for &(s, v) in readings {
        evaluate(
            cfg,
            state,
            "CF-1",
            rules,
            "temperature",
            (s * 1000.0).round() as i64,
            v,
            &mut out,
        );
    }
    out.iter().map(render).collect()
}

fn render(t: &Transition) -> String {
    match t {
        Transition::Open { rule, ts, .. } => format!("open {rule} @{}", *ts as f64 / 1000.0),
        Transition::Resolve { rule, ts } => format!("resolve {rule} @{}", *ts as f64 / 1000.0),
    }
}

/// Readings every `step` seconds from `from` (inclusive) to `to` (exclusive) at `value`.
fn flat(from: f64, to: f64, step: f64, value: f64) -> Vec<(f64, f64)> {
    let n = ((to - from) / step).ceil() as usize;
    (0..n).map(|i| (from + i as f64 * step, value)).collect()
}

/// Deterministic noise in [-amp, amp] (a small LCG: tests must not flake).
fn noisy(readings: &mut [(f64, f64)], amp: f64, seed: u64) {
    let mut x = seed;
    for r in readings {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let unit = (x >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        r.1 += (unit * 2.0 - 1.0) * amp;
    }
}

fn cat(parts: &[Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
    parts.concat()
}

#[test]
fn threshold_rules_from_data() {
    let max = [threshold("hot", None, Some(-18.0))];
    let band = [threshold("band", Some(-25.0), Some(-18.0))];
    let cfg = EngineConfig::default();
    let no_hold = EngineConfig {
        resolve_hold_ms: 0,
        ..EngineConfig::default()
    };
    let cases: Vec<ThresholdCase> = vec![
        (
            "steady in range",
            &cfg,
            &max,
            flat(0.0, 300.0, 5.0, -20.0),
            vec![],
        ),
        (
            "at the limit is in range",
            &cfg,
            &max,
            vec![(0.0, -18.0)],
            vec![],
        ),
        (
            "one breach opens once",
            &cfg,
            &max,
            cat(&[flat(0.0, 10.0, 5.0, -20.0), flat(10.0, 60.0, 5.0, -16.0)]),
            vec!["open hot @10"],
        ),
        (
            "same millisecond twice",
            &cfg,
            &max,
            vec![(1.0, -16.0), (1.0, -15.0), (1.0, -20.0)],
            vec!["open hot @1"],
        ),
        (
            "resolves after a full hold",
            &cfg,
            &max,
            cat(&[vec![(0.0, -16.0)], flat(5.0, 100.0, 5.0, -20.0)]),
            vec!["open hot @0", "resolve hot @65"],
        ),
        (
            "a breach cancels the hold",
            &cfg,
            &max,
            cat(&[
                vec![(0.0, -16.0)],
                flat(5.0, 40.0, 5.0, -20.0),
                vec![(40.0, -17.0)],
                flat(45.0, 200.0, 5.0, -20.0),
            ]),
            vec!["open hot @0", "resolve hot @105"],
        ),
        (
            "hold 0 resolves at once",
            &no_hold,
            &max,
            vec![(0.0, -16.0), (5.0, -20.0), (10.0, -16.0)],
            vec!["open hot @0", "resolve hot @5", "open hot @10"],
        ),
        (
            "below min",
            &cfg,
            &band,
            vec![(0.0, -20.0), (5.0, -26.0)],
            vec!["open band @5"],
        ),
        (
            "from above max to below min is one excursion",
            &cfg,
            &band,
            vec![(0.0, -16.0), (5.0, -26.0), (10.0, -30.0)],
            vec!["open band @0"],
        ),
        (
            "late breach with nothing active still opens, never twice",
            &cfg,
            &max,
            vec![(100.0, -20.0), (50.0, -16.0), (60.0, -15.0), (105.0, -20.0)],
            vec!["open hot @50"],
        ),
        (
            "late readings neither start nor cancel a hold",
            &cfg,
            &max,
            vec![
                (0.0, -16.0),
                (10.0, -20.0),
                (5.0, -20.0),
                (30.0, -20.0),
                (20.0, -16.0),
                (70.0, -20.0),
            ],
            vec!["open hot @0", "resolve hot @70"],
        ),
        (
            "a redelivered batch does not reopen a resolved excursion",
            &no_hold,
            &max,
            vec![
                (0.0, -16.0),
                (5.0, -15.0),
                (10.0, -20.0),
                (0.0, -16.0),
                (5.0, -15.0),
                (10.0, -20.0),
            ],
            vec!["open hot @0", "resolve hot @10"],
        ),
        (
            "a late excursion outside the reported one opens",
            &no_hold,
            &max,
            vec![
                (100.0, -16.0),
                (110.0, -20.0),
                (120.0, -20.0),
                (50.0, -16.0),
            ],
            vec!["open hot @100", "resolve hot @110", "open hot @50"],
        ),
        (
            "NaN and infinities are ignored",
            &cfg,
            &max,
            vec![
                (0.0, f64::NAN),
                (1.0, f64::INFINITY),
                (2.0, f64::NEG_INFINITY),
            ],
            vec![],
        ),
    ];
    for (name, cfg, rules, readings, want) in cases {
        assert_eq!(run(cfg, rules, &readings), want, "{name}");
    }
}

/// Seed 000: -20 °C steady, then -16 °C from one 5-second reading to the next.
fn seed_000_jump() -> Vec<(f64, f64)> {
    cat(&[flat(0.0, 300.0, 5.0, -20.0), flat(300.0, 900.0, 5.0, -16.0)])
}

#[test]
fn rate_rules_from_data() {
    let cfg = EngineConfig::default();
    let both = [rate("rate", 1.0, RateDirection::Both)];
    let rise = [rate("rate", 1.0, RateDirection::Rise)];
    let fall = [rate("rate", 1.0, RateDirection::Fall)];

    let mut noise_5s = flat(0.0, 3600.0, 5.0, -20.0);
    noisy(&mut noise_5s, 0.3, 1);
    let mut noise_1s = flat(0.0, 3600.0, 1.0, -20.0);
    noisy(&mut noise_1s, 0.3, 2);
    let mut jump_noisy = seed_000_jump();
    noisy(&mut jump_noisy, 0.3, 3);
    let jump_1s = cat(&[flat(0.0, 300.0, 1.0, -20.0), flat(300.0, 900.0, 1.0, -16.0)]);
    let drop = cat(&[flat(0.0, 300.0, 5.0, -16.0), flat(300.0, 900.0, 5.0, -20.0)]);
    // A slow drift of 0.5 °C/min stays under a 1.0/min limit however it is sampled.
    let drift: Vec<(f64, f64)> = (0..720)
        .map(|i| (i as f64 * 5.0, -20.0 + i as f64 * 5.0 / 120.0))
        .collect();
    // A door left open: 3 °C/min for two minutes.
    let ramp = cat(&[
        flat(0.0, 120.0, 5.0, -20.0),
        (0..24)
            .map(|i| (120.0 + i as f64 * 5.0, -20.0 + i as f64 * 0.25))
            .collect(),
        flat(240.0, 600.0, 5.0, -14.0),
    ]);
    // Readings 90 s apart: nothing in a 60 s window to compare with.
    let sparse: Vec<(f64, f64)> = (0..20)
        .map(|i| (i as f64 * 90.0, -20.0 + (i % 2) as f64 * 5.0))
        .collect();
    // Readings 1 ms apart never make a rate on their own.
    let burst = vec![(0.0, -20.0), (0.001, -10.0), (0.002, 0.0)];

    let cases: Vec<(&str, &[Rule], Series, Vec<&str>)> = vec![
        (
            "seed 000 jump raises one alert",
            &both,
            seed_000_jump(),
            vec!["open rate @300", "resolve rate @420"],
        ),
        (
            "the jump with noise on top",
            &both,
            jump_noisy,
            vec!["open rate @300", "resolve rate @420"],
        ),
        (
            "the jump sampled every second",
            &both,
            jump_1s,
            vec!["open rate @300", "resolve rate @420"],
        ),
        (
            "noise of ±0.3 every 5 s from a cold start",
            &both,
            noise_5s,
            vec![],
        ),
        ("noise of ±0.3 every second", &both, noise_1s, vec![]),
        ("slow drift", &both, drift, vec![]),
        (
            "door left open",
            &both,
            ramp,
            vec!["open rate @145", "resolve rate @340"],
        ),
        ("a drop against a rise rule", &rise, drop.clone(), vec![]),
        (
            "a drop against a fall rule",
            &fall,
            drop,
            vec!["open rate @300", "resolve rate @420"],
        ),
        ("gaps longer than the window", &both, sparse, vec![]),
        ("readings milliseconds apart", &both, burst, vec![]),
    ];
    for (name, rules, readings, want) in cases {
        assert_eq!(run(&cfg, rules, &readings), want, "{name}");
    }
}

#[test]
fn the_seed_000_alert_reads_well() {
    let mut state = SensorState::new();
    let mut out = Vec::new();
    let rules = [
        threshold("threshold-critical", None, Some(-18.0)),
        rate("rate-warning", 1.0, RateDirection::Rise),
    ];
    for (s, v) in seed_000_jump().into_iter().take(61) {
        evaluate(
            &EngineConfig::default(),
            &mut state,
            "CF-1",
            &rules,
            "temperature",
            (s * 1000.0) as i64,
            v,
            &mut out,
        );
    }
    let expect = |rule: &str, kind: RuleKind, severity: Severity, message: &str| Transition::Open {
        rule: rule.into(),
        kind,
        severity,
        metric: "temperature".into(),
        value: -16.0,
        ts: 300_000,
        message: message.into(),
        details: None,
    };
    assert_eq!(
        out,
        vec![
            expect(
                "threshold-critical",
                RuleKind::Threshold,
                Severity::Critical,
                "CF-1 temperature -16.0 above max -18.0"
            ),
            expect(
                "rate-warning",
                RuleKind::Rate,
                Severity::Warning,
                "CF-1 temperature rising 4.0/min (limit 1.0/min)"
            ),
        ]
    );
}

/// An hour of readings 5 s apart with a jump, a ramp and noise.
fn eventful_hour() -> Vec<(f64, f64)> {
    let mut readings: Vec<(f64, f64)> = (0..720)
        .map(|i| {
            let s = i as f64 * 5.0;
            let v = match s {
                s if s < 600.0 => -20.0,
                s if s < 1200.0 => -16.0,
                s if s < 1800.0 => -20.0 + (s - 1200.0) / 60.0 * 2.0,
                _ => -21.0,
            };
            (s, v)
        })
        .collect();
    noisy(&mut readings, 0.2, 7);
    readings
}

#[test]
fn a_backlog_replayed_at_once_raises_the_same_alerts_as_live() {
    let cfg = EngineConfig::default();
    let rules = [
        threshold("hot", None, Some(-18.0)),
        rate("fast", 1.0, RateDirection::Both),
    ];
    let live = run(&cfg, &rules, &eventful_hour());
    assert!(live.len() >= 4, "the hour must be eventful: {live:?}");

    // Online for ten minutes, then the rest arrives at once, shuffled; the caller sorts by ts.
    let hour = eventful_hour();
    let (online, backlog) = hour.split_at(120);
    let mut backlog = backlog.to_vec();
    backlog.reverse();
    backlog.swap(3, 400);
    backlog.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut state = SensorState::new();
    let mut replayed = run_on(&mut state, &cfg, &rules, online);
    replayed.extend(run_on(&mut state, &cfg, &rules, &backlog));
    assert_eq!(replayed, live);
}

#[test]
fn a_backlog_arriving_after_live_readings_still_reports_its_excursion() {
    let cfg = EngineConfig::default();
    let rules = [threshold("hot", None, Some(-18.0))];
    let hour = eventful_hour();
    // The device comes back and sends live readings first (in range); the stored-up
    // backlog with the excursion at 600–1200 s follows.
    let mut state = SensorState::new();
    let live_after = run_on(&mut state, &cfg, &rules, &hour[400..]);
    let backlog = run_on(&mut state, &cfg, &rules, &hour[..400]);
    assert!(live_after.is_empty(), "{live_after:?}");
    assert_eq!(
        backlog.len(),
        1,
        "exactly one alert for the hidden excursion: {backlog:?}"
    );
    assert!(backlog[0].starts_with("open hot @"), "{backlog:?}");
}

#[test]
fn rules_on_other_metrics_are_skipped() {
    let mut humidity = threshold("dry", Some(20.0), None);
    humidity.metric = "humidity".into();
    let rules = [humidity, threshold("hot", None, Some(-18.0))];
    let mut state = SensorState::new();
    let mut out = Vec::new();
    let cfg = EngineConfig::default();
    evaluate(
        &cfg,
        &mut state,
        "CF-1",
        &rules,
        "temperature",
        0,
        5.0,
        &mut out,
    );
    evaluate(
        &cfg, &mut state, "CF-1", &rules, "humidity", 0, 5.0, &mut out,
    );
    evaluate(
        &cfg, &mut state, "CF-1", &rules, "pressure", 0, 5.0, &mut out,
    );
    let names: Vec<String> = out.iter().map(render).collect();
    assert_eq!(names, ["open hot @0", "open dry @0"]);
    assert_eq!(state.latest("humidity"), Some((0, 5.0)));
    assert_eq!(state.latest("temperature"), Some((0, 5.0)));
    assert_eq!(state.latest("co2"), None);
}

#[test]
fn restart_rebuild_and_manual_resolve() {
    let cfg = EngineConfig::default();
    let rules = [threshold("hot", None, Some(-18.0))];

    // Rebuilt from an unresolved alert: the ongoing breach opens nothing, recovery resolves.
    let mut state = SensorState::new();
    state.mark_open("hot");
    state.seed_latest("temperature", 100_000, -16.0);
    assert_eq!(state.latest("temperature"), Some((100_000, -16.0)));
    let got = run_on(
        &mut state,
        &cfg,
        &rules,
        &cat(&[
            vec![(50.0, -15.0), (105.0, -16.0)],
            flat(110.0, 200.0, 5.0, -20.0),
        ]),
    );
    assert_eq!(got, ["resolve hot @170"]);

    // An older seed does not roll the state back.
    state.seed_latest("temperature", 1_000, -30.0);
    assert_eq!(state.latest("temperature"), Some((195_000, -20.0)));

    // An operator resolved it by hand while still hot: the next breach opens anew.
    let mut state = SensorState::new();
    assert_eq!(
        run_on(&mut state, &cfg, &rules, &[(0.0, -16.0)]),
        ["open hot @0"]
    );
    assert!(state.is_open("hot"));
    state.forget_excursion("hot");
    assert!(!state.is_open("hot"));
    assert_eq!(
        run_on(&mut state, &cfg, &rules, &[(5.0, -16.0), (10.0, -16.0)]),
        ["open hot @5"]
    );
}

/// A slow rise that straddles a restart: with only the latest reading seeded, the
/// window starts over and under-reads the trend; replaying the stored history keeps
/// the whole window, so the rule sees the same rate as if nothing had restarted.
#[test]
fn replayed_history_keeps_the_rate_window_across_a_restart() {
    let cfg = EngineConfig::default();
    let rules = [rate("rise", 1.0, RateDirection::Rise)];
    let history = [(5_000, -20.0), (30_000, -19.9), (55_000, -19.8)];

    let mut uninterrupted = SensorState::new();
    let mut history_then_live: Vec<(f64, f64)> = history
        .iter()
        .map(|&(ms, v)| (ms as f64 / 1000.0, v))
        .collect();
    history_then_live.push((60.0, -18.9));
    assert_eq!(
        run_on(&mut uninterrupted, &cfg, &rules, &history_then_live),
        ["open rise @60"]
    );

    let mut seeded = SensorState::new();
    let (ts, value) = history[2];
    seeded.seed_latest("temperature", ts, value);
    assert!(run_on(&mut seeded, &cfg, &rules, &[(60.0, -18.9)]).is_empty());

    let mut replayed = SensorState::new();
    for (ts, value) in history {
        replayed.replay(&cfg, "temperature", ts, value);
    }
    // Older and non-finite readings are ignored; so is a seed that is not newer.
    replayed.replay(&cfg, "temperature", 1_000, 50.0);
    replayed.replay(&cfg, "temperature", 56_000, f64::NAN);
    replayed.seed_latest("temperature", 55_000, -19.8);
    assert_eq!(replayed.latest("temperature"), Some((55_000, -19.8)));
    assert_eq!(
        run_on(&mut replayed, &cfg, &rules, &[(60.0, -18.9)]),
        ["open rise @60"]
    );
}

#[test]
fn state_of_removed_rules_is_dropped() {
    let cfg = EngineConfig::default();
    let mut state = SensorState::new();
    assert_eq!(
        run_on(
            &mut state,
            &cfg,
            &[threshold("old", None, Some(0.0))],
            &[(0.0, 5.0)]
        ),
        ["open old @0"]
    );
    let renamed = [threshold("new", None, Some(0.0))];
    assert_eq!(
        run_on(&mut state, &cfg, &renamed, &[(5.0, 5.0), (10.0, 5.0)]),
        ["open new @5"]
    );
    assert!(!state.is_open("old"));
    // Re-adding the old name starts it afresh.
    let both = [
        threshold("old", None, Some(0.0)),
        threshold("new", None, Some(0.0)),
    ];
    assert_eq!(
        run_on(&mut state, &cfg, &both, &[(15.0, 5.0)]),
        ["open old @15"]
    );
}
