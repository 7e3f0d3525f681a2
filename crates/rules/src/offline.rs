//! Offline rules: silence opens them on the wall clock, flowing data resolves them.

use vigia_core::{AlertDetails, Condition, OfflineDetails, Rule, RuleKind, Timestamp};

use crate::{message, Excursion, SensorState, Transition, Verdict};

/// What a live reading says about an offline rule's alert: only an open alert can move
/// (opening is [`check_silence`]'s); readings from before the alert opened prove nothing
/// about the present; a reading more than `expected + grace / 2` after the one before
/// restarts the hold (the hysteresis the crate doc explains).
pub(crate) fn offline_flow(
    exc: Option<&Excursion>,
    previous: Option<(i64, f64)>,
    ts: i64,
    expected: i64,
    grace: i64,
) -> Verdict {
    let Some(exc) = exc.filter(|e| e.active) else {
        return Verdict::Unknown;
    };
    if exc.opened_at.is_some_and(|opened| ts < opened) {
        return Verdict::Unknown;
    }
    let steady = expected.saturating_add(grace / 2);
    match previous {
        Some((prev, _)) if ts.saturating_sub(prev) <= steady => Verdict::Satisfied,
        _ => Verdict::Breached,
    }
}

/// Opens the alert of every offline rule whose metric has been silent for more than
/// `expected + grace` at wall-clock time `now` (epoch milliseconds), appending the opens
/// to `out`. Pure, like [`evaluate`]: the sweep that calls it owns the clock and commits
/// the transitions. An open alert is left alone (its hold restarts, as data stopped
/// again); resolving is [`evaluate`]'s, once data flows (see the crate doc).
pub fn check_silence(
    state: &mut SensorState,
    sensor_key: &str,
    rules: &[Rule],
    now: i64,
    out: &mut Vec<Transition>,
) {
    state.prune(rules);
    for rule in rules {
        let Condition::Offline { expected, grace } = rule.condition else {
            continue;
        };
        let Some((last_ts, last_value)) = state.latest(&rule.metric) else {
            continue;
        };
        let limit_ms = expected.0.saturating_add(grace.0);
        let silent_ms = now.saturating_sub(last_ts);
        if silent_ms <= limit_ms {
            continue;
        }
        let exc = state.excursion_entry(&rule.name);
        if exc.active {
            exc.in_range_since = None;
            continue;
        }
        exc.active = true;
        exc.in_range_since = None;
        exc.opened_at = Some(now);
        out.push(Transition::Open {
            rule: rule.name.clone(),
            kind: RuleKind::Offline,
            severity: rule.severity,
            metric: rule.metric.clone(),
            value: last_value,
            ts: now,
            message: message::offline(sensor_key, &rule.metric, silent_ms, expected.0, grace.0),
            details: Some(AlertDetails::Offline(OfflineDetails {
                silent_ms,
                limit_ms,
                last_seen: Timestamp(last_ts),
            })),
        });
    }
}
