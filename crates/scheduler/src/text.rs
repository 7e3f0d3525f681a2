//! Short human texts for durations and times, shared by status, messages and logs.

use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `250ms`, `1.5s`, `45s`, `5m`, `1m30s`, `2h`, `26h5m`: what an operator would write.
/// Past a minute, parts of a second are dropped.
pub(crate) fn duration(d: Duration) -> String {
    let total = d.as_secs();
    if total == 0 {
        return format!("{}ms", d.subsec_millis());
    }
    if total < 60 {
        let millis = d.subsec_millis();
        if millis == 0 {
            return format!("{total}s");
        }
        let fraction = format!("{millis:03}");
        return format!("{total}.{}s", fraction.trim_end_matches('0'));
    }
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let mut out = String::new();
    for (value, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

/// RFC 3339 in UTC with milliseconds (`2026-03-01T03:00:00.250Z`), the form every
/// timestamp of the API takes (as `vigia_core::Timestamp` writes it).
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let (y, mo, d) = (t.year(), t.month() as u8, t.day());
    let (h, mi, s, ms) = (t.hour(), t.minute(), t.second(), t.millisecond());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// Reads any RFC 3339 time back (the inverse of [`rfc3339`], for clients of the API).
pub(crate) fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn durations_read_like_config() {
        let cases = [
            (Duration::ZERO, "0ms"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(1025), "1.025s"),
            (Duration::from_secs(45), "45s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(90_700), "1m30s"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(7205), "2h5s"),
            (Duration::from_secs(26 * 3600 + 300), "26h5m"),
        ];
        for (d, want) in cases {
            assert_eq!(duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn timestamps_are_utc_milliseconds() {
        let cases = [
            (
                datetime!(2026-03-01 03:00:00 UTC),
                "2026-03-01T03:00:00.000Z",
            ),
            (
                datetime!(2026-03-01 03:00:00.250_999 UTC),
                "2026-03-01T03:00:00.250Z",
            ),
            (
                datetime!(2026-03-01 04:00:00 +01:00),
                "2026-03-01T03:00:00.000Z",
            ),
        ];
        for (t, want) in cases {
            assert_eq!(rfc3339(t), want);
            let back = parse_rfc3339(want).expect("our own output parses");
            assert_eq!(
                back,
                t.replace_nanosecond(t.millisecond() as u32 * 1_000_000)
                    .expect("valid")
            );
        }
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
