//! Properties of the rule engine over random reading sequences.

use proptest::prelude::*;
use vigia_core::{RateDirection, Rule, Severity};
use vigia_rules::{check_silence, evaluate, EngineConfig, SensorState, Transition};

fn rules() -> Vec<Rule> {
    let mut hot = Rule::threshold(Severity::Critical, Some(-25.0), Some(-18.0));
    hot.name = "band".into();
    let mut fast = Rule::rate(Severity::Warning, 1.0, RateDirection::Both);
    fast.name = "fast".into();
    let mut rising = Rule::rate(Severity::Critical, 0.5, RateDirection::Rise);
    rising.name = "rising".into();
    vec![hot, fast, rising]
}

/// A reading step: time delta in ms (negative means late) and a value, sometimes not finite.
fn step() -> impl Strategy<Value = (i64, f64)> {
    (
        prop_oneof![8 => 0i64..15_000, 1 => -120_000i64..0, 1 => 60_000i64..300_000],
        prop_oneof![10 => -30.0f64..-10.0, 1 => Just(f64::NAN), 1 => Just(f64::INFINITY)],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Never two opens of a rule without a resolve between; never a resolve without an open.
    #[test]
    fn opens_and_resolves_alternate(
        steps in proptest::collection::vec(step(), 1..400),
        hold in prop_oneof![Just(0i64), Just(15_000), Just(60_000)],
        mark_open in any::<bool>(),
    ) {
        let cfg = EngineConfig { resolve_hold_ms: hold, ..EngineConfig::default() };
        let rules = rules();
        let mut state = SensorState::new();
        if mark_open {
            state.mark_open("band");
        }
        let mut out = Vec::new();
        let mut ts = 1_700_000_000_000i64;
        for (dt, value) in steps {
            ts += dt;
            evaluate(&cfg, &mut state, "CF-1", &rules, "temperature", ts, value, &mut out);
        }
        for rule in &rules {
            let mut open = mark_open && rule.name == "band";
            for t in &out {
                match t {
                    Transition::Open { rule: r, .. } if *r == rule.name => {
                        prop_assert!(!open, "two opens of {} in {:?}", rule.name, out);
                        open = true;
                    }
                    Transition::Resolve { rule: r, .. } if *r == rule.name => {
                        prop_assert!(open, "resolve of {} without an open in {:?}", rule.name, out);
                        open = false;
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(open, state.is_open(&rule.name));
        }
    }
}

/// Every kind of rule at once, duration rules split as the API does.
fn all_kinds() -> Vec<Rule> {
    let mut rules: Vec<Rule> = serde_json::from_str(
        r#"[{"kind":"threshold","name":"band","min":-25,"max":-18,"severity":"critical"},
            {"kind":"rate","name":"fast","max_per_min":1,"severity":"warning"},
            {"kind":"duration","name":"day","max":-18,"warn_after":"2m","critical_after":"5m","window":"24h"},
            {"kind":"duration","name":"lot","min":-25,"critical_after":"3m","window":"batch"},
            {"kind":"anomaly","name":"odd","warmup":"2m"},
            {"kind":"offline","name":"off","expected":"5s","grace":"10s"}]"#,
    )
    .unwrap();
    let mut errors = Vec::new();
    vigia_core::rule::normalise_rules(&mut rules, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    rules
}

/// What happens next to a sensor: a reading (time delta, value), a sweep (how far past
/// the last reading), or a new lot.
#[derive(Debug, Clone)]
enum Happening {
    Reading(i64, f64),
    Sweep(i64),
    Lot(u8),
}

fn happening() -> impl Strategy<Value = Happening> {
    prop_oneof![
        12 => step().prop_map(|(dt, v)| Happening::Reading(dt, v)),
        // Flapping across the bounds every few seconds: the worst case for intervals.
        6 => (1_000i64..8_000, prop_oneof![Just(-17.0f64), Just(-20.0), Just(-26.0)])
            .prop_map(|(dt, v)| Happening::Reading(dt, v)),
        2 => (0i64..60_000).prop_map(Happening::Sweep),
        1 => (0u8..3).prop_map(Happening::Lot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// With every kind of rule, under flapping, sweeps, late readings and lot changes:
    /// opens and resolves alternate per rule, and the state stays within its bound (one
    /// metric: its rate window; each duration rule: its 64 intervals; one alert state per
    /// rule).
    #[test]
    fn every_kind_alternates_and_stays_bounded(
        happenings in proptest::collection::vec(happening(), 1..1500),
    ) {
        let cfg = EngineConfig { resolve_hold_ms: 15_000, ..EngineConfig::default() };
        let rules = all_kinds();
        let durations = rules.iter().filter(|r| r.condition.kind() == vigia_core::RuleKind::Duration).count();
        let bound = (1 + 256) + durations * (1 + 64) + rules.len();
        let mut state = SensorState::new();
        let mut out = Vec::new();
        let mut ts = 1_700_000_000_000i64;
        for h in happenings {
            match h {
                Happening::Reading(dt, value) => {
                    ts += dt;
                    evaluate(&cfg, &mut state, "CF-1", &rules, "temperature", ts, value, &mut out);
                }
                Happening::Sweep(after) => {
                    let now = state.latest("temperature").map_or(ts, |(t, _)| t) + after;
                    check_silence(&mut state, "CF-1", &rules, now, &mut out);
                }
                Happening::Lot(lot) => state.set_batch(Some(&format!("L{lot}"))),
            }
            prop_assert!(state.footprint() <= bound, "{} > {bound}", state.footprint());
        }
        for rule in &rules {
            let mut open = false;
            for t in &out {
                match t {
                    Transition::Open { rule: r, .. } if *r == rule.name => {
                        prop_assert!(!open, "two opens of {}", rule.name);
                        open = true;
                    }
                    Transition::Resolve { rule: r, .. } if *r == rule.name => {
                        prop_assert!(open, "resolve of {} without an open", rule.name);
                        open = false;
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(open, state.is_open(&rule.name));
        }
    }
}
