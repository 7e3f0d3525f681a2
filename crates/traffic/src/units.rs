//! Parsing of the human-friendly quantities the command line takes: durations
//! (`5s`, `250ms`, `1m30s`) and counts (`2_000_000`, `200k`, `2M`).

use std::time::Duration;

/// Parses a duration written as one or more `<number><unit>` parts, units `ms`, `s`,
/// `m`, `h` (`5s`, `250ms`, `1m`, `1m30s`, `1.5s`). A bare number is refused, because
/// "5" could mean seconds or milliseconds and guessing wrong makes a 1000× mistake.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration: write it like 5s, 250ms or 1m".into());
    }
    let mut total = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(format!("`{text}`: expected a number before `{rest}`"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("`{text}`: `{}` is not a number", &rest[..number_len]))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("`{text}`: add a unit (5s, 250ms, 1m, 1h)")),
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (use ms, s, m or h)"
                ))
            }
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    // A week is far beyond any sensible interval or run; it also keeps the float exact
    // enough and away from Duration's overflow panic.
    if !total.is_finite() || total > 7.0 * 86_400.0 {
        return Err(format!("`{text}`: longer than a week"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses a count, allowing `_` and `,` as digit separators and a `k` or `M` suffix
/// (`2_000_000`, `2,000,000`, `200k`, `2M`).
pub fn parse_count(text: &str) -> Result<u64, String> {
    let cleaned: String = text
        .trim()
        .chars()
        .filter(|c| *c != '_' && *c != ',')
        .collect();
    let (digits, multiplier) = match cleaned.as_bytes().last() {
        Some(b'k' | b'K') => (&cleaned[..cleaned.len() - 1], 1_000),
        Some(b'M') => (&cleaned[..cleaned.len() - 1], 1_000_000),
        _ => (cleaned.as_str(), 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a count (examples: 2000000, 2_000_000, 200k, 2M)"))?;
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let cases: &[(&str, u64)] = &[
            ("5s", 5_000),
            ("250ms", 250),
            ("1m", 60_000),
            ("1min", 60_000),
            ("1h", 3_600_000),
            ("1m30s", 90_000),
            ("1.5s", 1_500),
            (" 2s ", 2_000),
            ("0s", 0),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(*millis)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_durations_say_why() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("5", "add a unit"),
            ("5sec", "unknown unit `sec`"),
            ("s", "expected a number"),
            ("1..2s", "is not a number"),
            ("-5s", "expected a number"),
            ("200h", "longer than a week"),
            ("5s 3m", "unknown unit `s `"),
        ];
        for (text, needle) in cases {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn counts_parse() {
        let cases: &[(&str, u64)] = &[
            ("2000000", 2_000_000),
            ("2_000_000", 2_000_000),
            ("2,000,000", 2_000_000),
            ("200k", 200_000),
            ("2M", 2_000_000),
            ("0", 0),
        ];
        for (text, n) in cases {
            assert_eq!(parse_count(text), Ok(*n), "{text}");
        }
        for bad in ["", "k", "2m", "-1", "1.5M", "99999999999999999999M", "abc"] {
            assert!(parse_count(bad).is_err(), "{bad}");
        }
    }
}
