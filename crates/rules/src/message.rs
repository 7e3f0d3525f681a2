//! Alert messages for people: what happened, against which limit.

use vigia_core::AnomalySignal;

/// Formats `value` and `limit` with one decimal, or as many more (up to six) as it takes
/// for them to read differently, so a message never says "-18.0 above max -18.0".
fn pair(value: f64, limit: f64) -> (String, String) {
    let mut precision = 1;
    loop {
        let (v, l) = (
            format!("{value:.precision$}"),
            format!("{limit:.precision$}"),
        );
        if v != l || precision >= 6 {
            return (v, l);
        }
        precision += 1;
    }
}

/// "CF-1 temperature -16.0 above max -18.0" (`above` is false for a breach of `min`).
pub(crate) fn threshold(sensor: &str, metric: &str, value: f64, limit: f64, above: bool) -> String {
    let (v, l) = pair(value, limit);
    let side = if above { "above max" } else { "below min" };
    format!("{sensor} {metric} {v} {side} {l}")
}

/// "CF-1 temperature rising 4.8/min (limit 1.0/min)".
pub(crate) fn rate(sensor: &str, metric: &str, per_min: f64, limit: f64) -> String {
    let way = if per_min >= 0.0 { "rising" } else { "falling" };
    let (r, l) = pair(per_min.abs(), limit);
    format!("{sensor} {metric} {way} {r}/min (limit {l}/min)")
}

/// A length of time for a person: `45s`, `3m 05s`, `2h 00m`.
pub(crate) fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m {sec:02}s"),
        (h, min, _) => format!("{h}h {min:02}m"),
    }
}

/// "CF-1 temperature out of range for 2h 00m within the last 24h (limit 2h 00m)".
pub(crate) fn duration(
    sensor: &str,
    metric: &str,
    out_ms: i64,
    limit_ms: i64,
    window: &str,
) -> String {
    format!(
        "{sensor} {metric} out of range for {} within {window} (limit {})",
        span(out_ms),
        span(limit_ms)
    )
}

/// "CF-1 temperature -12.0 deviates (score 9.1; expected -20.6 to -19.4)", "… drifting",
/// "… stuck at -20.0 for 30m 00s".
pub(crate) fn anomaly(
    sensor: &str,
    metric: &str,
    signal: AnomalySignal,
    value: f64,
    (lo, hi): (f64, f64),
    score: f64,
    flat_ms: i64,
) -> String {
    let (v, _) = pair(value, lo);
    match signal {
        AnomalySignal::Flatline => {
            format!("{sensor} {metric} stuck at {v} for {}", span(flat_ms))
        }
        AnomalySignal::Deviation | AnomalySignal::Trend => {
            let (l, h) = pair(lo, hi);
            let what = if signal == AnomalySignal::Trend {
                "drifting"
            } else {
                "deviates"
            };
            format!("{sensor} {metric} {v} {what} (score {score:.1}; expected {l} to {h})")
        }
    }
}

/// "CF-1 temperature silent for 1m 05s (expected every 5s, grace 1m 00s)".
pub(crate) fn offline(
    sensor: &str,
    metric: &str,
    silent_ms: i64,
    expected_ms: i64,
    grace_ms: i64,
) -> String {
    format!(
        "{sensor} {metric} silent for {} (expected every {}, grace {})",
        span(silent_ms),
        span(expected_ms),
        span(grace_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_from_data() {
        let cases = [
            (
                threshold("CF-1", "temperature", -16.0, -18.0, true),
                "CF-1 temperature -16.0 above max -18.0",
            ),
            (
                threshold("CF-1", "temperature", -17.96, -18.0, true),
                "CF-1 temperature -17.96 above max -18.00",
            ),
            (
                threshold("REF-3", "humidity", 12.5, 20.0, false),
                "REF-3 humidity 12.5 below min 20.0",
            ),
            (
                rate("CF-1", "temperature", 4.8, 1.0),
                "CF-1 temperature rising 4.8/min (limit 1.0/min)",
            ),
            (
                rate("CF-1", "temperature", -2.25, 1.5),
                "CF-1 temperature falling 2.2/min (limit 1.5/min)",
            ),
            (
                rate("CF-1", "temperature", 1.04, 1.0),
                "CF-1 temperature rising 1.04/min (limit 1.00/min)",
            ),
        ];
        let more = [
            (span(45_000), "45s"),
            (span(185_000), "3m 05s"),
            (span(7_200_000), "2h 00m"),
            (
                duration("CF-1", "temperature", 7_200_000, 7_200_000, "the last 24h"),
                "CF-1 temperature out of range for 2h 00m within the last 24h (limit 2h 00m)",
            ),
            (
                anomaly(
                    "CF-1",
                    "temperature",
                    AnomalySignal::Deviation,
                    -12.0,
                    (-20.6, -19.4),
                    9.06,
                    0,
                ),
                "CF-1 temperature -12.0 deviates (score 9.1; expected -20.6 to -19.4)",
            ),
            (
                anomaly(
                    "CF-1",
                    "temperature",
                    AnomalySignal::Flatline,
                    -20.0,
                    (-20.6, -19.4),
                    1.0,
                    1_800_000,
                ),
                "CF-1 temperature stuck at -20.0 for 30m 00s",
            ),
            (
                offline("CF-1", "temperature", 65_000, 5_000, 60_000),
                "CF-1 temperature silent for 1m 05s (expected every 5s, grace 1m 00s)",
            ),
        ];
        for (got, want) in cases.into_iter().chain(more) {
            assert_eq!(got, want);
        }
    }
}
