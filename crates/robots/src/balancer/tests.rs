//! Balancer choices as data: a few instances described in one line each, and the one that
//! must be chosen.

use super::*;
use proptest::prelude::*;

const NOW: i64 = 1_000_000;

/// One instance in a table row.
#[derive(Debug, Clone, Copy)]
struct Spec {
    name: &'static str,
    capacity: u32,
    weight: f64,
    health: Health,
    in_flight: u32,
    /// Calls recorded just before `NOW`: (successes, failures, latency of each, ms).
    calls: (u32, u32, f64),
    /// Trip its breaker (3 failures recorded through it at `NOW`).
    open: bool,
    /// Trip its breaker a cool-down before `NOW`, so it is half-open now.
    half_open: bool,
}

const BASE: Spec = Spec {
    name: "",
    capacity: 4,
    weight: 1.0,
    health: Health::Healthy,
    in_flight: 0,
    calls: (0, 0, 0.0),
    open: false,
    half_open: false,
};

fn breaker_config() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 3,
        failure_window_ms: 60_000,
        cool_down_ms: 30_000,
        half_open_probes: 1,
        probe_timeout_ms: 300_000,
    }
}

fn build(specs: &[Spec], config: &BalancerConfig) -> Vec<Instance> {
    specs
        .iter()
        .map(|spec| {
            let mut instance =
                Instance::new(spec.name, spec.capacity, spec.weight, breaker_config());
            instance.health = spec.health;
            let (successes, failures, latency) = spec.calls;
            // Interleave so the EWMA sees the mix, not a streak; stats only, breaker untouched.
            for i in 0..successes.max(failures) {
                if i < successes {
                    instance
                        .stats
                        .record(&config.tracker, Outcome::Success, latency, NOW);
                }
                if i < failures {
                    instance
                        .stats
                        .record(&config.tracker, Outcome::Failure, latency, NOW);
                }
            }
            let tripped_at = match (spec.open, spec.half_open) {
                (true, _) => Some(NOW),
                (false, true) => Some(NOW - 30_000),
                (false, false) => None,
            };
            if let Some(at) = tripped_at {
                for _ in 0..3 {
                    let permit = instance.breaker.try_acquire(at).expect("closed");
                    instance.breaker.on_failure(permit, at);
                }
            }
            instance.in_flight = spec.in_flight;
            instance
        })
        .collect()
}

#[test]
fn choices() {
    let config = BalancerConfig::default();
    let s = |name| Spec { name, ..BASE };
    #[rustfmt::skip]
    let table: &[(&str, &[Spec], Option<&str>)] = &[
        ("no instances", &[], None),
        ("the only instance", &[s("a")], Some("a")),
        ("identical instances: the smallest name", &[s("b"), s("a"), s("c")], Some("a")),
        ("equal scores: fewest in flight wins over the name", &[
            // in flight 1 of 4 vs 2 of 8: the same free share, so the same score.
            Spec { in_flight: 2, capacity: 8, ..s("a") }, Spec { in_flight: 1, ..s("b") },
        ], Some("b")),
        ("more free room wins", &[Spec { in_flight: 2, ..s("a") }, Spec { in_flight: 1, ..s("b") }], Some("b")),
        ("a better success rate wins", &[
            Spec { calls: (5, 5, 100.0), ..s("a") }, Spec { calls: (9, 1, 100.0), ..s("b") },
        ], Some("b")),
        ("a lower latency wins", &[
            Spec { calls: (10, 0, 900.0), ..s("a") }, Spec { calls: (10, 0, 100.0), ..s("b") },
        ], Some("b")),
        ("an unmeasured instance is tried before a slow one", &[
            Spec { calls: (10, 0, 500.0), ..s("a") }, s("b"),
        ], Some("b")),
        ("weight favours the bigger machine", &[s("a"), Spec { weight: 2.0, ..s("b") }], Some("b")),
        ("weight 0 drains", &[Spec { weight: 0.0, ..s("a") }], None),
        ("unhealthy is skipped even with the best score", &[
            Spec { health: Health::Unhealthy, ..s("a") }, Spec { calls: (1, 9, 900.0), ..s("b") },
        ], Some("b")),
        ("never probed counts as healthy", &[Spec { health: Health::Unknown, ..s("a") }], Some("a")),
        ("an open breaker is skipped", &[
            Spec { open: true, ..s("a") }, Spec { calls: (1, 9, 900.0), ..s("b") },
        ], Some("b")),
        ("a half-open instance gets its probe before better scores", &[
            Spec { calls: (10, 0, 10.0), ..s("a") }, Spec { half_open: true, calls: (0, 10, 900.0), ..s("b") },
        ], Some("b")),
        ("a half-open instance at capacity waits", &[
            s("a"), Spec { half_open: true, in_flight: 4, ..s("b") },
        ], Some("a")),
        ("at capacity is skipped", &[Spec { in_flight: 4, ..s("a") }, Spec { in_flight: 3, ..s("b") }], Some("b")),
        ("capacity 0 is never chosen", &[Spec { capacity: 0, ..s("a") }], None),
        ("all unavailable: none", &[
            Spec { health: Health::Unhealthy, ..s("a") }, Spec { open: true, ..s("b") },
            Spec { in_flight: 4, ..s("c") },
        ], None),
    ];
    for (name, specs, expected) in table {
        let mut instances = build(specs, &config);
        let before: Vec<u32> = instances.iter().map(|i| i.in_flight).collect();
        let chosen = choose(&mut instances, &config, NOW);
        assert_eq!(
            chosen.map(|d| instances[d.index].name.as_str()),
            *expected,
            "case {name:?}"
        );
        if let Some(dispatch) = chosen {
            assert_eq!(
                instances[dispatch.index].in_flight,
                before[dispatch.index] + 1,
                "{name}"
            );
            assert_eq!(
                ranking(&build(specs, &config), &config, NOW)[0],
                dispatch.index,
                "ranking agrees with choose: {name}"
            );
        }
        let after: Vec<u32> = instances.iter().map(|i| i.in_flight).collect();
        let changed = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        assert_eq!(
            changed,
            usize::from(chosen.is_some()),
            "only the chosen one moves: {name}"
        );
    }
}

#[test]
fn score_formula() {
    let config = BalancerConfig {
        latency_reference_ms: 100.0,
        tracker: TrackerConfig {
            success_alpha: 1.0,
            latency_alpha: 1.0,
            ..TrackerConfig::default()
        },
    };
    // (spec, expected score): weight × success × 100/(100+latency) × free share
    #[rustfmt::skip]
    let table = [
        (BASE, 1.0),
        (Spec { calls: (1, 0, 100.0), ..BASE }, 0.5),
        (Spec { calls: (1, 0, 300.0), in_flight: 2, ..BASE }, 0.125),
        (Spec { calls: (1, 0, 0.0), weight: 3.0, in_flight: 1, ..BASE }, 2.25),
        (Spec { calls: (0, 1, 0.0), ..BASE }, 0.0),
        (Spec { in_flight: 4, ..BASE }, 0.0),
        (Spec { weight: f64::INFINITY, ..BASE }, 0.0),
        (Spec { weight: f64::NAN, ..BASE }, 0.0),
    ];
    for (index, (spec, expected)) in table.into_iter().enumerate() {
        let instance = &build(&[spec], &config)[0];
        let score = instance.score(&config, NOW);
        assert!(
            (score - expected).abs() < 1e-12,
            "row {index}: {score} != {expected}"
        );
    }
}

#[test]
fn finishing_feeds_stats_and_breaker() {
    let config = BalancerConfig::default();
    let mut instances = build(&[Spec { name: "a", ..BASE }], &config);
    // Three failed calls open the breaker (threshold 3); then nothing is chosen.
    for at in 0..3 {
        let dispatch = choose(&mut instances, &config, NOW + at).expect("closed breaker");
        instances[0].finish(&config, dispatch.permit, Outcome::Failure, 50.0, NOW + at);
    }
    assert_eq!(instances[0].in_flight, 0);
    assert_eq!(instances[0].stats.counts(), (3, 3));
    assert_eq!(instances[0].breaker.state(NOW + 3), BreakerState::Open);
    assert_eq!(choose(&mut instances, &config, NOW + 3), None);
    // After the cool-down exactly one probe is handed out, even with capacity left.
    let half_open = NOW + 2 + 30_000;
    let probe = choose(&mut instances, &config, half_open).expect("half-open probe");
    assert!(probe.permit.is_probe());
    assert_eq!(
        choose(&mut instances, &config, half_open),
        None,
        "one probe only"
    );
    // An abandoned probe frees its slot and its permit.
    instances[0].abandon(probe.permit, half_open);
    assert_eq!(instances[0].in_flight, 0);
    let probe = choose(&mut instances, &config, half_open).expect("permit back");
    instances[0].finish(&config, probe.permit, Outcome::Success, 20.0, half_open + 1);
    assert_eq!(
        instances[0].breaker.state(half_open + 1),
        BreakerState::Closed
    );
    assert_eq!(instances[0].stats.counts(), (4, 3));
}

#[test]
fn next_available() {
    let s = |name| Spec { name, ..BASE };
    let config = BalancerConfig::default();
    // Breakers open at NOW with a 30 s cool-down.
    #[rustfmt::skip]
    let table: &[(&str, &[Spec], Option<i64>)] = &[
        ("none registered", &[], None),
        ("one available now", &[Spec { open: true, ..s("a") }, s("b")], Some(NOW)),
        ("open: when its cool-down ends", &[Spec { open: true, ..s("a") }], Some(NOW + 30_000)),
        ("unhealthy and open: unknown", &[Spec { open: true, health: Health::Unhealthy, ..s("a") }], None),
        ("full: unknown", &[Spec { in_flight: 4, ..s("a") }], None),
        ("drained: unknown", &[Spec { weight: 0.0, ..s("a") }], None),
    ];
    for (name, specs, expected) in table {
        let instances = build(specs, &config);
        assert_eq!(next_available_at(&instances, NOW), *expected, "{name}");
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u32..4,
        prop_oneof![Just(0.0), Just(1.0), Just(2.5)],
        prop_oneof![
            Just(Health::Unknown),
            Just(Health::Healthy),
            Just(Health::Unhealthy)
        ],
        0u32..5,
        (
            0u32..5,
            0u32..5,
            prop_oneof![Just(0.0), Just(100.0), Just(2_000.0)],
        ),
        prop_oneof![
            Just((false, false)),
            Just((true, false)),
            Just((false, true))
        ],
    )
        .prop_map(
            |(capacity, weight, health, in_flight, calls, (open, half_open))| Spec {
                capacity,
                weight,
                health,
                in_flight,
                calls,
                open,
                half_open,
                ..BASE
            },
        )
}

const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

proptest! {
    /// The choice is a candidate with the best score (among the half-open ones when a probe
    /// is due), `None` exactly when there is none.
    #[test]
    fn chooses_a_best_candidate(specs in proptest::collection::vec(spec(), 0..6)) {
        let config = BalancerConfig::default();
        let specs: Vec<Spec> = specs
            .into_iter()
            .zip(NAMES)
            .map(|(spec, name)| Spec { name, ..spec })
            .collect();
        let mut instances = build(&specs, &config);
        let half_open = |i: &Instance| i.breaker.state(NOW) == BreakerState::HalfOpen;
        let probe_due = instances.iter().any(|i| i.is_candidate(NOW) && half_open(i));
        let best = instances
            .iter()
            .filter(|i| i.is_candidate(NOW) && (!probe_due || half_open(i)))
            .map(|i| i.score(&config, NOW))
            .max_by(f64::total_cmp);
        match choose(&mut instances, &config, NOW) {
            Some(dispatch) => {
                let chosen = &instances[dispatch.index];
                prop_assert!(chosen.health != Health::Unhealthy);
                prop_assert!(chosen.in_flight <= chosen.capacity);
                prop_assert!(chosen.weight > 0.0);
                prop_assert_eq!(half_open(chosen), probe_due);
                prop_assert_eq!(Some(dispatch.score), best);
            }
            None => prop_assert_eq!(best, None),
        }
    }
}
