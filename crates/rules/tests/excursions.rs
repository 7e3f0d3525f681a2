//! Excursions past threshold and duration limits as data: readings in, excursion
//! records out (open, extend, close, gaps, late readings, restore after a restart).

use vigia_core::Rule;
use vigia_rules::{evaluate_recording, EngineConfig, ExcursionRecord, SensorState};

fn rules(json: &str) -> Vec<Rule> {
    let mut rules: Vec<Rule> = serde_json::from_str(json).expect("valid rule JSON");
    let mut errors = Vec::new();
    vigia_core::rule::normalise_rules(&mut rules, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    rules
}

const HIGH: &str = r#"[{"kind":"threshold","name":"high","max":-18,"severity":"critical"}]"#;

/// What the caller would store after each batch: every record handed out, closed ones
/// as they close and open ones that changed, collected once per batch.
fn run_batches(
    state: &mut SensorState,
    rules: &[Rule],
    batches: &[&[(f64, f64)]],
) -> Vec<Vec<String>> {
    let cfg = EngineConfig::default();
    let mut transitions = Vec::new();
    batches
        .iter()
        .map(|batch| {
            let mut records = Vec::new();
            for &(s, v) in batch.iter() {
                evaluate_recording(
                    &cfg,
                    state,
                    "CF-1",
                    rules,
                    "temperature",
                    (s * 1000.0) as i64,
                    v,
                    &mut transitions,
                    &mut records,
                );
            }
            state.changed_excursions(&mut records);
            records.iter().map(render).collect()
        })
        .collect()
}

/// `rule start..end peak out gaps/gap_s`, times in seconds (`..` for an open one: its
/// last reading).
fn render(r: &ExcursionRecord) -> String {
    let s = |ms: i64| ms as f64 / 1000.0;
    let end = match r.end {
        Some(end) => format!("{}", s(end)),
        None => format!("({})", s(r.last)),
    };
    format!(
        "{} {}..{end} peak {} out {} gaps {}/{}",
        r.rule,
        s(r.start),
        r.peak,
        s(r.out_ms),
        r.gaps,
        s(r.gap_ms)
    )
}

/// Readings every `step` s from `from` (inclusive) to `to` (exclusive) at `value`.
fn flat(from: f64, to: f64, step: f64, value: f64) -> Vec<(f64, f64)> {
    let n = ((to - from) / step).ceil() as usize;
    (0..n).map(|i| (from + i as f64 * step, value)).collect()
}

fn cat(parts: &[Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
    parts.concat()
}

#[test]
fn excursions_from_data() {
    type Case = (
        &'static str,
        &'static str,
        Vec<Vec<(f64, f64)>>,
        Vec<Vec<&'static str>>,
    );
    let cases: Vec<Case> = vec![
        (
            "in range: nothing",
            HIGH,
            vec![flat(0.0, 30.0, 5.0, -20.0)],
            vec![vec![]],
        ),
        (
            "from the first out reading to the first in one, peak the farthest",
            HIGH,
            vec![vec![
                (0.0, -20.0),
                (5.0, -17.0),
                (10.0, -12.5),
                (15.0, -15.0),
                (20.0, -19.0),
                (25.0, -19.0),
            ]],
            vec![vec!["high 5..20 peak -12.5 out 15 gaps 0/0"]],
        ),
        (
            "open across batches: each batch gives the whole excursion so far",
            HIGH,
            vec![
                vec![(0.0, -20.0), (5.0, -17.0), (10.0, -16.0)],
                vec![(15.0, -10.0)],
                vec![],
                vec![(20.0, -19.0)],
            ],
            vec![
                vec!["high 5..(10) peak -16 out 5 gaps 0/0"],
                vec!["high 5..(15) peak -10 out 10 gaps 0/0"],
                vec![],
                vec!["high 5..20 peak -10 out 15 gaps 0/0"],
            ],
        ),
        (
            "a silence inside counts as out and is a gap (over 2x the 5 s spacing)",
            HIGH,
            vec![cat(&[
                flat(0.0, 30.0, 5.0, -20.0),
                vec![(30.0, -16.0), (35.0, -16.0), (95.0, -15.0), (100.0, -16.0)],
                vec![(400.0, -19.0)],
            ])],
            vec![vec!["high 30..400 peak -15 out 370 gaps 2/360"]],
        ),
        (
            "a spacing of up to twice the usual is no gap",
            HIGH,
            vec![cat(&[
                flat(0.0, 30.0, 5.0, -20.0),
                vec![(30.0, -16.0), (40.0, -16.0), (45.0, -20.0)],
            ])],
            vec![vec!["high 30..45 peak -16 out 15 gaps 0/0"]],
        ),
        (
            "two excursions in one batch: both, in order",
            HIGH,
            vec![vec![
                (0.0, -17.0),
                (5.0, -19.0),
                (10.0, -16.0),
                (15.0, -19.0),
                (20.0, -14.0),
            ]],
            vec![vec![
                "high 0..5 peak -17 out 5 gaps 0/0",
                "high 10..15 peak -16 out 5 gaps 0/0",
                "high 20..(20) peak -14 out 0 gaps 0/0",
            ]],
        ),
        (
            "late readings (a redelivery) change nothing",
            HIGH,
            vec![
                vec![(0.0, -20.0), (5.0, -17.0), (10.0, -16.0)],
                vec![(5.0, -17.0), (10.0, -16.0)],
                vec![(0.0, -10.0), (7.0, -19.0)],
            ],
            vec![vec!["high 5..(10) peak -16 out 5 gaps 0/0"], vec![], vec![]],
        ),
        (
            "a duration rule's limits, once per stage",
            r#"[{"name":"cold","kind":"duration","min":-25,"max":-18,
                 "warn_after":"2h","critical_after":"4h","window":"24h"}]"#,
            vec![vec![
                (0.0, -20.0),
                (5.0, -30.0),
                (10.0, -16.0),
                (15.0, -20.0),
            ]],
            vec![vec![
                "cold-warning 5..15 peak -30 out 10 gaps 0/0",
                "cold-critical 5..15 peak -30 out 10 gaps 0/0",
            ]],
        ),
        (
            "rate, anomaly and offline rules have no limits to leave",
            r#"[{"name":"fast","kind":"rate","max_per_min":0.1,"severity":"warning"},
                {"name":"gone","kind":"offline","expected":"5s","grace":"10s"}]"#,
            vec![vec![(0.0, -20.0), (5.0, 40.0), (10.0, -20.0)]],
            vec![vec![]],
        ),
    ];
    for (name, json, batches, want) in cases {
        let rules = rules(json);
        let refs: Vec<&[(f64, f64)]> = batches.iter().map(Vec::as_slice).collect();
        let got = run_batches(&mut SensorState::new(), &rules, &refs);
        let want: Vec<Vec<String>> = want
            .iter()
            .map(|b| b.iter().map(|s| s.to_string()).collect())
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

/// After a restart the stored ongoing excursion is restored, so the next readings extend
/// it (same start, time counted from it) instead of opening another.
#[test]
fn a_restored_excursion_goes_on() {
    let rules = rules(HIGH);
    let mut before = SensorState::new();
    let first = run_batches(
        &mut before,
        &rules,
        &[&[
            (0.0, -20.0),
            (5.0, -20.0),
            (10.0, -20.0),
            (15.0, -16.0),
            (20.0, -14.0),
        ]],
    );
    assert_eq!(first, [vec!["high 15..(20) peak -14 out 5 gaps 0/0"]]);
    let stored: Vec<ExcursionRecord> = before.open_excursions().cloned().collect();

    let mut after = SensorState::new();
    after.seed_latest("temperature", 20_000, -14.0);
    for record in stored {
        after.restore_excursion(&rules, record);
    }
    let next = run_batches(&mut after, &rules, &[&[(25.0, -15.0), (30.0, -19.0)]]);
    assert_eq!(next, [vec!["high 15..30 peak -14 out 15 gaps 0/0"]]);

    // A closed record, or one of a rule that is gone, restores nothing.
    let mut other = SensorState::new();
    let mut closed = before.open_excursions().next().cloned().expect("open");
    closed.end = Some(closed.last);
    other.restore_excursion(&rules, closed);
    let mut renamed = before.open_excursions().next().cloned().expect("open");
    renamed.rule = "gone".into();
    other.restore_excursion(&rules, renamed);
    assert_eq!(other.open_excursions().count(), 0);
}

/// Flapping for hours keeps one open excursion at most per rule.
#[test]
fn state_stays_bounded_while_flapping() {
    let rules = rules(HIGH);
    let mut state = SensorState::new();
    let readings: Vec<(f64, f64)> = (0..10_000)
        .map(|i| (i as f64 * 5.0, if i % 2 == 0 { -17.0 } else { -19.0 }))
        .collect();
    let out = run_batches(&mut state, &rules, &[&readings]);
    assert_eq!(out[0].len(), 5_000, "every excursion is handed out once");
    assert!(state.open_excursions().count() <= 1);
    assert!(state.footprint() < 300, "{}", state.footprint());
}
