//! Alert messages for people: what happened, against which limit.

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
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
