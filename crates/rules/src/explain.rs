//! Words and details for an alert that opens: what the rule measured.

use vigia_core::{AlertDetails, AnomalyDetails, Condition, DurationDetails, DurationWindow, Rule};

use crate::{message, Measure};

pub(crate) fn describe(
    sensor: &str,
    rule: &Rule,
    value: f64,
    measure: Measure,
    batch: Option<&str>,
) -> String {
    match (&rule.condition, measure) {
        (Condition::Threshold { min, max }, _) => match (min, max) {
            (_, Some(hi)) if value > *hi => {
                message::threshold(sensor, &rule.metric, value, *hi, true)
            }
            (Some(lo), _) => message::threshold(sensor, &rule.metric, value, *lo, false),
            // Unreachable for a breached threshold; say something true anyway.
            _ => format!("{sensor} {} {value}", rule.metric),
        },
        (Condition::Rate { max_per_min, .. }, measure) => {
            let rate = match measure {
                Measure::Rate(r) => r,
                _ => 0.0,
            };
            message::rate(sensor, &rule.metric, rate, *max_per_min)
        }
        (Condition::Duration { window, .. }, Measure::Duration { out_ms, limit_ms }) => {
            message::duration(
                sensor,
                &rule.metric,
                out_ms,
                limit_ms,
                &window_words(*window, batch),
            )
        }
        (Condition::Anomaly { .. }, Measure::Anomaly(score, signal, value_score, threshold)) => {
            let (lo, hi) = score.expected(signal, threshold);
            message::anomaly(
                sensor,
                &rule.metric,
                signal,
                value,
                (lo, hi),
                value_score,
                score.flat_ms,
            )
        }
        _ => format!("{sensor} {} {value}", rule.metric),
    }
}

/// "the last 24h" / "batch L-7" / "the current batch".
fn window_words(window: DurationWindow, batch: Option<&str>) -> String {
    match (window, batch) {
        (DurationWindow::Rolling(span), _) => format!("the last {span}"),
        (DurationWindow::Batch, Some(lot)) => format!("batch {lot}"),
        (DurationWindow::Batch, None) => "the current batch".into(),
    }
}

pub(crate) fn details(
    rule: &Rule,
    value: f64,
    measure: Measure,
    batch: Option<&str>,
) -> Option<AlertDetails> {
    match (&rule.condition, measure) {
        (Condition::Duration { window, .. }, Measure::Duration { out_ms, limit_ms }) => {
            Some(AlertDetails::Duration(DurationDetails {
                out_of_range_ms: out_ms,
                limit_ms,
                window: match window {
                    DurationWindow::Rolling(span) => span.to_string(),
                    DurationWindow::Batch => "batch".into(),
                },
                batch: match window {
                    DurationWindow::Batch => batch.map(str::to_string),
                    DurationWindow::Rolling(_) => None,
                },
            }))
        }
        (Condition::Anomaly { .. }, Measure::Anomaly(score, signal, value_score, threshold)) => {
            let (expected_min, expected_max) = score.expected(signal, threshold);
            Some(AlertDetails::Anomaly(AnomalyDetails {
                signal,
                expected_min,
                expected_max,
                observed: value,
                score: value_score,
                threshold,
            }))
        }
        _ => None,
    }
}
