//! Every transition of the breaker as a script: steps at given times, each with what it must
//! answer. Permits are numbered in the order they were granted.

use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Step {
    /// `try_acquire` at this time must grant a permit (a probe or not).
    Grant { at: i64, probe: bool },
    /// `try_acquire` at this time must refuse.
    Refuse { at: i64, why: Refusal },
    /// The call under permit N succeeded.
    Succeed { at: i64, permit: usize },
    /// The call under permit N failed.
    Fail { at: i64, permit: usize },
    /// The call under permit N was never sent.
    Abandon { at: i64, permit: usize },
    /// `state(at)` must read this, and `admits(at)` must agree with what a grant would do.
    Is { at: i64, state: BreakerState },
    /// `recent_failures(at)` must count this many.
    Counting { at: i64, failures: usize },
}

use BreakerState::{Closed, HalfOpen, Open};
use Step::*;

/// threshold 3 in 10 s, cool-down 5 s, probes as given, probe timeout 20 s.
fn config(half_open_probes: u32) -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 3,
        failure_window_ms: 10_000,
        cool_down_ms: 5_000,
        half_open_probes,
        probe_timeout_ms: 20_000,
    }
}

/// Opens a breaker of `config(probes)` at t = 1,000 with three failures at 0, 500, 1,000.
const OPEN_AT_1000: [Step; 7] = [
    Grant {
        at: 0,
        probe: false,
    },
    Grant {
        at: 0,
        probe: false,
    },
    Grant {
        at: 0,
        probe: false,
    },
    Fail { at: 0, permit: 0 },
    Fail { at: 500, permit: 1 },
    Fail {
        at: 1_000,
        permit: 2,
    },
    Is {
        at: 1_000,
        state: Open,
    },
];

/// Four permits taken while closed at t = 0 (numbered 0 to 3).
const FOUR_PERMITS: [Step; 4] = [Grant {
    at: 0,
    probe: false,
}; 4];

fn run(name: &str, probes: u32, prefix: &[Step], steps: &[Step]) {
    let mut breaker = Breaker::new(config(probes));
    let mut permits: Vec<Permit> = Vec::new();
    for (index, step) in prefix.iter().chain(steps).enumerate() {
        let context = format!("case {name:?}, step {index}: {step:?}");
        match *step {
            Grant { at, probe } => {
                assert!(breaker.admits(at), "{context}: admits() said no");
                let permit = breaker
                    .try_acquire(at)
                    .unwrap_or_else(|refusal| panic!("{context}: refused with {refusal:?}"));
                assert_eq!(permit.is_probe(), probe, "{context}");
                permits.push(permit);
            }
            Refuse { at, why } => {
                assert!(!breaker.admits(at), "{context}: admits() said yes");
                let opening = match why {
                    Refusal::Open { half_open_at } => Some(half_open_at),
                    Refusal::ProbesOut => None,
                };
                assert_eq!(breaker.half_open_at(at), opening, "{context}");
                assert_eq!(breaker.try_acquire(at), Err(why), "{context}");
            }
            Succeed { at, permit } => breaker.on_success(permits[permit], at),
            Fail { at, permit } => breaker.on_failure(permits[permit], at),
            Abandon { at, permit } => breaker.on_abandoned(permits[permit], at),
            Is { at, state } => assert_eq!(breaker.state(at), state, "{context}"),
            Counting { at, failures } => {
                assert_eq!(breaker.recent_failures(at), failures, "{context}")
            }
        }
    }
}

#[test]
fn transitions() {
    let none: &[Step] = &[];
    #[rustfmt::skip]
    let cases: &[(&str, u32, &[Step], &[Step])] = &[
        ("starts closed", 1, none, &[Is { at: 0, state: Closed }, Grant { at: 0, probe: false }]),
        ("threshold - 1 failures stay closed", 1, none, &[
            Grant { at: 0, probe: false }, Grant { at: 0, probe: false },
            Fail { at: 100, permit: 0 }, Fail { at: 200, permit: 1 },
            Is { at: 200, state: Closed }, Grant { at: 300, probe: false },
        ]),
        ("threshold failures in the window open", 1, &OPEN_AT_1000, &[
            Refuse { at: 1_000, why: Refusal::Open { half_open_at: 6_000 } },
            Refuse { at: 5_999, why: Refusal::Open { half_open_at: 6_000 } },
        ]),
        ("successes between failures do not reset the count", 1, &FOUR_PERMITS, &[
            Fail { at: 100, permit: 0 }, Succeed { at: 150, permit: 1 },
            Fail { at: 200, permit: 2 }, Fail { at: 300, permit: 3 },
            Is { at: 300, state: Open },
        ]),
        ("failures outside the window do not count", 1, none, &[
            Grant { at: 0, probe: false }, Grant { at: 0, probe: false },
            Grant { at: 0, probe: false },
            Fail { at: 0, permit: 0 }, Fail { at: 1_000, permit: 1 },
            // 10 s after the first: it has just left the window, so only two count.
            Fail { at: 10_000, permit: 2 },
            Is { at: 10_000, state: Closed }, Counting { at: 10_000, failures: 2 },
            Counting { at: 11_000, failures: 1 }, Counting { at: 20_000, failures: 0 },
            Grant { at: 10_500, probe: false }, Fail { at: 10_500, permit: 3 },
            Is { at: 10_500, state: Open },
        ]),
        ("a failure reported with an earlier time counts at the last failure's", 1, &FOUR_PERMITS, &[
            Fail { at: 9_000, permit: 0 }, Fail { at: 2_000, permit: 1 },
            // Both count at 9 s, so both have left the window at 19 s.
            Fail { at: 19_000, permit: 2 }, Is { at: 19_000, state: Closed },
            Fail { at: 19_001, permit: 3 }, Is { at: 19_001, state: Closed },
        ]),
        ("failures long apart never open", 1, &FOUR_PERMITS, &[
            Fail { at: 0, permit: 0 }, Fail { at: 20_000, permit: 1 },
            Fail { at: 40_000, permit: 2 }, Fail { at: 60_000, permit: 3 },
            Is { at: 60_000, state: Closed },
        ]),
        ("open turns half-open exactly at the end of the cool-down", 1, &OPEN_AT_1000, &[
            Is { at: 5_999, state: Open }, Is { at: 6_000, state: HalfOpen },
            Grant { at: 6_000, probe: true },
        ]),
        ("half-open grants exactly one probe, then refuses", 1, &OPEN_AT_1000, &[
            Grant { at: 7_000, probe: true },
            Refuse { at: 7_000, why: Refusal::ProbesOut },
            Refuse { at: 8_000, why: Refusal::ProbesOut },
            Is { at: 8_000, state: HalfOpen },
        ]),
        ("half-open grants exactly three probes when configured so", 3, &OPEN_AT_1000, &[
            Grant { at: 7_000, probe: true }, Grant { at: 7_000, probe: true },
            Grant { at: 7_001, probe: true },
            Refuse { at: 7_002, why: Refusal::ProbesOut },
        ]),
        ("a probe's success closes with no failures remembered", 1, &OPEN_AT_1000, &[
            Grant { at: 7_000, probe: true }, Succeed { at: 7_100, permit: 3 },
            Is { at: 7_100, state: Closed }, Grant { at: 7_100, probe: false },
            // Two fresh failures do not reopen: the three before the opening are gone.
            Grant { at: 7_100, probe: false },
            Fail { at: 7_200, permit: 4 }, Fail { at: 7_300, permit: 5 },
            Is { at: 7_300, state: Closed },
        ]),
        ("a probe's failure reopens with a fresh cool-down", 1, &OPEN_AT_1000, &[
            Grant { at: 7_000, probe: true }, Fail { at: 8_000, permit: 3 },
            Is { at: 8_000, state: Open },
            Refuse { at: 12_999, why: Refusal::Open { half_open_at: 13_000 } },
            Is { at: 13_000, state: HalfOpen }, Grant { at: 13_000, probe: true },
        ]),
        ("with three probes the first success closes, later results move nothing", 3, &OPEN_AT_1000, &[
            Grant { at: 7_000, probe: true }, Grant { at: 7_000, probe: true },
            Grant { at: 7_000, probe: true },
            Succeed { at: 7_100, permit: 3 }, Is { at: 7_100, state: Closed },
            Fail { at: 7_200, permit: 4 }, Fail { at: 7_300, permit: 5 },
            Is { at: 7_300, state: Closed },
        ]),
        ("with three probes the first failure reopens, a later success does not close", 3, &OPEN_AT_1000, &[
            Grant { at: 7_000, probe: true }, Grant { at: 7_000, probe: true },
            Fail { at: 7_100, permit: 3 }, Succeed { at: 7_200, permit: 4 },
            Is { at: 7_200, state: Open },
            Refuse { at: 7_200, why: Refusal::Open { half_open_at: 12_100 } },
        ]),
        ("a late failure admitted while closed does not count once open", 1, &FOUR_PERMITS, &[
            Fail { at: 0, permit: 0 }, Fail { at: 0, permit: 1 }, Fail { at: 0, permit: 2 },
            // Half-open at 5 s; the slow call admitted at 0 fails now: not a probe.
            Grant { at: 5_000, probe: true }, Fail { at: 5_001, permit: 3 },
            Is { at: 5_001, state: HalfOpen }, Succeed { at: 5_002, permit: 4 },
            Is { at: 5_002, state: Closed },
        ]),
        ("a late success admitted while closed does not close a half-open breaker", 1, &FOUR_PERMITS, &[
            Fail { at: 0, permit: 0 }, Fail { at: 0, permit: 1 }, Fail { at: 0, permit: 2 },
            Succeed { at: 6_000, permit: 3 }, Is { at: 6_000, state: HalfOpen },
        ]),
        ("an abandoned probe gives its permit back", 1, &OPEN_AT_1000, &[
            Grant { at: 7_000, probe: true }, Abandon { at: 7_001, permit: 3 },
            Is { at: 7_001, state: HalfOpen }, Grant { at: 7_002, probe: true },
            Refuse { at: 7_003, why: Refusal::ProbesOut },
        ]),
        ("probes that never report reopen after the probe timeout", 1, &OPEN_AT_1000, &[
            Grant { at: 7_000, probe: true },
            Is { at: 26_999, state: HalfOpen }, Is { at: 27_000, state: Open },
            Refuse { at: 27_000, why: Refusal::Open { half_open_at: 32_000 } },
            // The lost probe's report, if it ever comes, belongs to a past state.
            Succeed { at: 28_000, permit: 3 }, Is { at: 28_000, state: Open },
            Grant { at: 32_000, probe: true },
        ]),
        ("a breaker idle long after a lost probe is half-open again", 1, &OPEN_AT_1000, &[
            Grant { at: 7_000, probe: true },
            // Reopened when the probe timed out at 27 s, so half-open from 32 s.
            Is { at: 31_999, state: Open }, Is { at: 32_000, state: HalfOpen },
            Grant { at: 40_000, probe: true }, Refuse { at: 40_000, why: Refusal::ProbesOut },
        ]),
        ("an open breaker ignores failures and successes of old permits", 1, &OPEN_AT_1000, &[
            Succeed { at: 2_000, permit: 0 }, Fail { at: 2_000, permit: 1 },
            Is { at: 5_999, state: Open }, Is { at: 6_000, state: HalfOpen },
        ]),
    ];
    for (name, probes, prefix, steps) in cases {
        run(name, *probes, prefix, steps);
    }
}

#[test]
fn gauge_and_names() {
    let table = [
        (Closed, 0, "closed"),
        (Open, 1, "open"),
        (HalfOpen, 2, "half_open"),
    ];
    for (state, gauge, name) in table {
        assert_eq!((state.gauge(), state.as_str()), (gauge, name));
    }
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Succeed(usize),
    Fail(usize),
    Abandon(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Acquire),
        1 => any::<usize>().prop_map(Op::Succeed),
        2 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::Abandon),
    ]
}

proptest! {
    /// Whatever happens, a half-open period never has more than `half_open_probes` probes
    /// out, `admits` always agrees with `try_acquire`, and the state read before a call is the
    /// one the call finds.
    #[test]
    fn never_more_probes_than_configured(
        probes in 1u32..4,
        ops in proptest::collection::vec((op(), 0i64..3_000), 1..200),
    ) {
        let mut breaker = Breaker::new(config(probes));
        let mut permits: Vec<Permit> = Vec::new();
        let mut now = 0;
        let mut probes_this_period: Vec<u32> = Vec::new();
        for (op, step) in ops {
            now += step;
            match op {
                Op::Acquire => {
                    let state = breaker.state(now);
                    let admitted = breaker.admits(now);
                    let result = breaker.try_acquire(now);
                    prop_assert_eq!(admitted, result.is_ok());
                    match result {
                        Ok(permit) => {
                            prop_assert_ne!(state, Open);
                            prop_assert_eq!(permit.is_probe(), state == HalfOpen);
                            if permit.is_probe() {
                                let generation = permit.generation as usize;
                                if probes_this_period.len() <= generation {
                                    probes_this_period.resize(generation + 1, 0);
                                }
                                probes_this_period[generation] += 1;
                            }
                            permits.push(permit);
                        }
                        Err(_) => prop_assert_ne!(state, Closed),
                    }
                }
                Op::Succeed(i) if !permits.is_empty() => {
                    breaker.on_success(permits.swap_remove(i % permits.len()), now);
                }
                Op::Fail(i) if !permits.is_empty() => {
                    breaker.on_failure(permits.swap_remove(i % permits.len()), now);
                }
                Op::Abandon(i) if !permits.is_empty() => {
                    let permit = permits.swap_remove(i % permits.len());
                    breaker.on_abandoned(permit, now);
                    // A permit handed back may be handed out again within the same period.
                    if permit.is_probe() && permit.generation == breaker.generation {
                        probes_this_period[permit.generation as usize] -= 1;
                    }
                }
                _ => {}
            }
            prop_assert!(probes_this_period.iter().all(|&n| n <= probes));
        }
    }
}
