//! Duration, anomaly and offline rules as data: events in, alert transitions out.

use vigia_core::{AlertDetails, AnomalySignal, Rule};
use vigia_rules::{check_silence, evaluate, EngineConfig, OutOfRange, SensorState, Transition};

/// Rules as a client writes them, normalised as the API does (duration rules split).
fn rules(json: &str) -> Vec<Rule> {
    let mut rules: Vec<Rule> = serde_json::from_str(json).expect("valid rule JSON");
    let mut errors = Vec::new();
    vigia_core::rule::normalise_rules(&mut rules, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    rules
}

/// Something that happens to a sensor, at a time in seconds.
#[derive(Clone, Copy)]
enum Event {
    /// A temperature reading: event time, value.
    Reading(f64, f64),
    /// The offline sweep runs at this wall-clock time.
    Sweep(f64),
    /// The sensor's product lot changes.
    Batch(&'static str),
}
use Event::*;

fn ms(s: f64) -> i64 {
    (s * 1000.0).round() as i64
}

fn run_on(state: &mut SensorState, rules: &[Rule], events: &[Event]) -> Vec<Transition> {
    let cfg = EngineConfig::default();
    let mut out = Vec::new();
    for &e in events {
        match e {
            Reading(s, v) => evaluate(
                &cfg,
                state,
                "CF-1",
                rules,
                "temperature",
                ms(s),
                v,
                &mut out,
            ),
            Sweep(s) => check_silence(state, "CF-1", rules, ms(s), &mut out),
            Batch(lot) => state.set_batch(Some(lot)),
        }
    }
    out
}

fn render(t: &Transition) -> String {
    match t {
        Transition::Open { rule, ts, .. } => format!("open {rule} @{}", *ts as f64 / 1000.0),
        Transition::Resolve { rule, ts } => format!("resolve {rule} @{}", *ts as f64 / 1000.0),
    }
}

fn run(rules: &[Rule], events: &[Event]) -> Vec<String> {
    run_on(&mut SensorState::new(), rules, events)
        .iter()
        .map(render)
        .collect()
}

/// Readings every `step` seconds from `from` (inclusive) to `to` (exclusive) at `value`.
fn flat(from: f64, to: f64, step: f64, value: f64) -> Vec<Event> {
    let n = ((to - from) / step).ceil() as usize;
    (0..n)
        .map(|i| Reading(from + i as f64 * step, value))
        .collect()
}

/// Sweeps every `step` seconds from `from` to `to` (exclusive).
fn sweeps(from: f64, to: f64, step: f64) -> Vec<Event> {
    let n = ((to - from) / step).ceil() as usize;
    (0..n).map(|i| Sweep(from + i as f64 * step)).collect()
}

/// Merges event lists by time (readings and sweeps interleaved as they would happen).
fn merged(parts: &[Vec<Event>]) -> Vec<Event> {
    let mut all: Vec<Event> = parts.concat();
    let at = |e: &Event| match e {
        Reading(s, _) | Sweep(s) => *s,
        Batch(_) => f64::NAN,
    };
    all.sort_by(|a, b| at(a).total_cmp(&at(b)));
    all
}

const H: f64 = 3600.0;

const SEED_RULE: &str = r#"[{"kind":"duration","name":"cf","max":-18,"warn_after":"2h","critical_after":"4h","window":"24h"}]"#;

/// Seed 000: CF-1 reads -16 °C every 5 s for 4 h 30 min; the rule warns at 2 h and goes
/// critical at 4 h, in event time, and one in-range reading at 3 h does not reset it
/// (it stood in range for its 5 s, which is all it takes off the count).
#[test]
fn the_seed_000_four_hour_rule() {
    let rules = rules(SEED_RULE);
    let hot = flat(0.0, 4.5 * H, 5.0, -16.0);
    assert_eq!(
        run(&rules, &hot),
        ["open cf-warning @7200", "open cf-critical @14400"]
    );

    let mut with_good_reading = hot.clone();
    let at_3h = with_good_reading
        .iter()
        .position(|e| matches!(e, Reading(s, _) if *s == 3.0 * H))
        .unwrap();
    with_good_reading[at_3h] = Reading(3.0 * H, -20.0);
    assert_eq!(
        run(&rules, &with_good_reading),
        ["open cf-warning @7200", "open cf-critical @14405"]
    );

    // The same readings arriving as one backlog, sorted by the caller, say the same.
    let transitions = run_on(&mut SensorState::new(), &rules, &hot);
    match &transitions[1] {
        Transition::Open {
            details: Some(AlertDetails::Duration(d)),
            message,
            ..
        } => {
            assert_eq!((d.out_of_range_ms, d.limit_ms), (14_400_000, 14_400_000));
            assert_eq!(d.window, "24h");
            assert_eq!(
                message,
                "CF-1 temperature out of range for 4h 00m within the last 24h (limit 4h 00m)"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Name, rules, events, expected transitions.
type Case<'a> = (&'a str, &'a [Rule], Vec<Event>, Vec<&'a str>);

#[test]
fn duration_rules_from_data() {
    let one_hour =
        rules(r#"[{"kind":"duration","name":"d","max":-18,"critical_after":"30m","window":"1h"}]"#);
    let batch = rules(
        r#"[{"kind":"duration","name":"d","max":-18,"critical_after":"30m","window":"batch"}]"#,
    );
    let cases: Vec<Case> = vec![
        (
            "in range",
            &one_hour,
            flat(0.0, 2.0 * H, 5.0, -20.0),
            vec![],
        ),
        (
            "short excursions add up",
            &one_hour,
            [
                flat(0.0, 600.0, 5.0, -16.0),
                flat(600.0, 900.0, 5.0, -20.0),
                flat(900.0, 1500.0, 5.0, -16.0),
                flat(1500.0, 1800.0, 5.0, -20.0),
                flat(1800.0, 2700.0, 5.0, -16.0),
            ]
            .concat(),
            // 600 s + 600 s (each up to the first in-range reading), then 600 s more.
            vec!["open d @2400"],
        ),
        (
            "a silence while out of range counts",
            &one_hour,
            vec![Reading(0.0, -16.0), Reading(1800.0, -16.0)],
            vec!["open d @1800"],
        ),
        (
            "time leaving the window resolves after the hold",
            &one_hour,
            [
                flat(0.0, 1800.0, 5.0, -16.0),
                flat(1800.0, 7200.0, 5.0, -20.0),
            ]
            .concat(),
            // Out over [0, 1800 s]; its start leaves the 1-hour window after 3600 s, so the
            // total is under 30 min from 3605 s; then the 60 s hold.
            vec!["open d @1800", "resolve d @3665"],
        ),
        (
            "a batch window keeps counting past any rolling window",
            &batch,
            [
                flat(0.0, 1200.0, 5.0, -16.0),
                flat(1200.0, 4.0 * H, 5.0, -20.0),
                flat(4.0 * H, 4.0 * H + 700.0, 5.0, -16.0),
            ]
            .concat(),
            vec!["open d @15000"],
        ),
        (
            "a new lot starts from zero",
            &batch,
            [
                vec![Batch("L1")],
                flat(0.0, 1810.0, 5.0, -16.0),
                vec![Batch("L2")],
                flat(1810.0, 2000.0, 5.0, -20.0),
                flat(2000.0, 2400.0, 5.0, -16.0),
            ]
            .concat(),
            vec!["open d @1800", "resolve d @1870"],
        ),
        (
            "late readings are not counted",
            &one_hour,
            vec![
                Reading(1000.0, -20.0),
                Reading(0.0, -16.0),
                Reading(500.0, -16.0),
                Reading(2900.0, -20.0),
            ],
            vec![],
        ),
    ];
    for (name, rules, events, want) in cases {
        assert_eq!(run(rules, &events), want, "{name}");
    }
}

#[test]
fn a_batch_alert_names_its_lot() {
    let rules =
        rules(r#"[{"kind":"duration","name":"d","max":-18,"warn_after":"10m","window":"batch"}]"#);
    let mut events = vec![Batch("L-7")];
    events.extend(flat(0.0, 700.0, 5.0, -16.0));
    let out = run_on(&mut SensorState::new(), &rules, &events);
    match &out[..] {
        [Transition::Open {
            details: Some(AlertDetails::Duration(d)),
            message,
            ..
        }] => {
            assert_eq!(
                (d.window.as_str(), d.batch.as_deref()),
                ("batch", Some("L-7"))
            );
            assert!(
                message.ends_with("within batch L-7 (limit 10m 00s)"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A worker restarts 3 h into the seed's excursion: seeded from the stored excursion and
/// the unresolved warning, it goes critical at 4 h as if nothing had happened.
#[test]
fn a_restart_rebuilds_the_total_from_stored_excursions() {
    let rules = rules(SEED_RULE);
    let mut state = SensorState::new();
    let stored = [OutOfRange {
        start: 0,
        end: ms(3.0 * H),
        ongoing: true,
    }];
    for rule in ["cf-warning", "cf-critical"] {
        state.seed_out_of_range(rule, &stored);
    }
    state.mark_open("cf-warning");
    state.seed_latest("temperature", ms(3.0 * H), -16.0);
    let got: Vec<String> = run_on(
        &mut state,
        &rules,
        &flat(3.0 * H + 5.0, 4.5 * H, 5.0, -16.0),
    )
    .iter()
    .map(render)
    .collect();
    assert_eq!(got, ["open cf-critical @14400"]);
}

const OFFLINE: &str = r#"[{"kind":"offline","name":"off","expected":"5s","grace":"60s"}]"#;

#[test]
fn offline_rules_from_data() {
    let rules = rules(OFFLINE);
    // Readings 64 s and 68 s apart by turns, against a limit of 65 s.
    let mut jitter = Vec::new();
    let mut t = 0.0;
    for i in 0..200 {
        jitter.push(Reading(t, -20.0));
        t += if i % 2 == 0 { 64.0 } else { 68.0 };
    }
    let cases: Vec<(&str, Vec<Event>, Vec<&str>)> = vec![
        (
            "flowing",
            merged(&[flat(0.0, 600.0, 5.0, -20.0), sweeps(0.0, 600.0, 10.0)]),
            vec![],
        ),
        ("never heard from", sweeps(0.0, 600.0, 10.0), vec![]),
        (
            "silent past expected + grace, back for the hold",
            merged(&[
                flat(0.0, 100.0, 5.0, -20.0),
                flat(200.0, 400.0, 5.0, -20.0),
                sweeps(0.0, 400.0, 10.0),
            ]),
            // Last reading at 95 s: 65 s of silence at 160 s is not yet more than 65.
            // Back at 200 s (its gap restarts the hold), flowing from 205 s: hold 60 s.
            vec!["open off @170", "resolve off @265"],
        ),
        (
            "a sensor jittering at the limit opens once and does not flap",
            merged(&[jitter, sweeps(0.0, 13_000.0, 1.0)]),
            vec!["open off @130"],
        ),
        (
            "a backlog older than the alert proves nothing about now",
            vec![
                Reading(0.0, -20.0),
                Sweep(100.0),
                Reading(5.0, -20.0),
                Reading(10.0, -20.0),
                Reading(70.0, -20.0),
                Reading(95.0, -20.0),
                Reading(99.0, -20.0),
            ],
            vec!["open off @100"],
        ),
        (
            "silent again during the hold: the hold starts over",
            merged(&[
                flat(0.0, 10.0, 5.0, -20.0),
                flat(100.0, 130.0, 5.0, -20.0),
                flat(200.0, 300.0, 5.0, -20.0),
                sweeps(0.0, 300.0, 10.0),
            ]),
            vec!["open off @80", "resolve off @265"],
        ),
    ];
    for (name, events, want) in cases {
        assert_eq!(run(&rules, &events), want, "{name}");
    }
}

#[test]
fn an_offline_alert_says_how_long_and_since_when() {
    let rules = rules(OFFLINE);
    let out = run_on(
        &mut SensorState::new(),
        &rules,
        &[Reading(10.0, -20.5), Sweep(80.0)],
    );
    match &out[..] {
        [Transition::Open {
            details: Some(AlertDetails::Offline(d)),
            message,
            value,
            ts,
            ..
        }] => {
            assert_eq!(
                (d.silent_ms, d.limit_ms, d.last_seen.0),
                (70_000, 65_000, 10_000)
            );
            assert_eq!((*value, *ts), (-20.5, 80_000));
            assert_eq!(
                message,
                "CF-1 temperature silent for 1m 10s (expected every 5s, grace 1m 00s)"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Deterministic noise in [-amp, amp] (a small LCG: tests must not flake).
fn noisy(events: &mut [Event], amp: f64, seed: u64) {
    let mut x = seed;
    for e in events {
        if let Reading(_, v) = e {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
            *v += (unit * 2.0 - 1.0) * amp;
        }
    }
}

#[test]
fn anomaly_rules_from_data() {
    let rules = rules(r#"[{"kind":"anomaly","name":"odd","warmup":"1h"}]"#);
    let with_spike_at = |s: f64, base: &[Event]| -> Vec<Event> {
        base.iter()
            .map(|&e| match e {
                Reading(t, v) if t == s => Reading(t, v + 5.0),
                e => e,
            })
            .collect()
    };
    let mut noise = flat(0.0, 3.0 * H, 5.0, -20.0);
    noisy(&mut noise, 0.3, 11);
    let cases: Vec<(&str, Vec<Event>, Vec<&str>)> = vec![
        ("noise alone", noise.clone(), vec![]),
        (
            "a spike during warm-up",
            with_spike_at(1800.0, &noise),
            vec![],
        ),
        (
            "a spike after warm-up",
            with_spike_at(2.0 * H, &noise),
            vec!["open odd @7200", "resolve odd @7265"],
        ),
    ];
    for (name, events, want) in cases {
        assert_eq!(run(&rules, &events), want, "{name}");
    }

    let out = run_on(
        &mut SensorState::new(),
        &rules,
        &with_spike_at(2.0 * H, &noise),
    );
    match &out[0] {
        Transition::Open {
            details: Some(AlertDetails::Anomaly(d)),
            value,
            ..
        } => {
            assert_eq!(d.signal, AnomalySignal::Deviation);
            assert_eq!(d.observed, *value);
            assert!(d.expected_min < -20.0 && -20.0 < d.expected_max, "{d:?}");
            assert!(d.expected_max < d.observed, "{d:?}");
            assert!(d.score >= d.threshold, "{d:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// Rebuilt by replay, the model judges from the first live reading: no second warm-up.
#[test]
fn an_anomaly_model_is_rebuilt_by_replay() {
    let rules = rules(r#"[{"kind":"anomaly","name":"odd","warmup":"1h"}]"#);
    let cfg = EngineConfig::default();
    let mut noise = flat(0.0, 2.0 * H, 5.0, -20.0);
    noisy(&mut noise, 0.3, 5);
    let mut state = SensorState::new();
    for e in &noise {
        if let Reading(s, v) = e {
            state.replay_for(&cfg, &rules, "temperature", ms(*s), *v);
        }
    }
    let got: Vec<String> = run_on(&mut state, &rules, &[Reading(2.0 * H, -14.0)])
        .iter()
        .map(render)
        .collect();
    assert_eq!(got, ["open odd @7200"]);
}
