//! Properties of the rule engine over random reading sequences.

use proptest::prelude::*;
use vigia_core::{RateDirection, Rule, Severity};
use vigia_rules::{evaluate, EngineConfig, SensorState, Transition};

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
