//! Timestamps: UTC milliseconds inside, RFC 3339 or epoch milliseconds on input,
//! RFC 3339 on output.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A UTC instant with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The earliest instant RFC 3339 can write: `0000-01-01T00:00:00.000Z`.
    pub const RFC3339_MIN: Timestamp = Timestamp(-62_167_219_200_000);

    /// The latest instant RFC 3339 can write: `9999-12-31T23:59:59.999Z`.
    pub const RFC3339_MAX: Timestamp = Timestamp(253_402_300_799_999);

    /// Whether [`Timestamp::to_rfc3339`] can write this instant as RFC 3339 (years
    /// 0000–9999); outside, it falls back to the bare number.
    pub fn is_rfc3339(self) -> bool {
        (Self::RFC3339_MIN..=Self::RFC3339_MAX).contains(&self)
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        Timestamp((nanos / 1_000_000) as i64)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (`2026-11-23T10:00:00Z`, any offset, any fraction).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        Some(Timestamp(
            (parsed.unix_timestamp_nanos() / 1_000_000) as i64,
        ))
    }

    /// Formats as RFC 3339 in UTC with millisecond precision.
    pub fn to_rfc3339(self) -> String {
        match OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000) {
            Ok(t) => {
                let (y, mo, d) = (t.year(), t.month() as u8, t.day());
                let (h, mi, s, ms) = (t.hour(), t.minute(), t.second(), t.millisecond());
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
            }
            // Out of the representable range: fall back to the raw number rather than panic.
            Err(_) => self.0.to_string(),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RFC 3339 string or epoch milliseconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(v).ok_or_else(|| E::custom("not an RFC 3339 timestamp"))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timestamp, E> {
                i64::try_from(v)
                    .map(Timestamp)
                    .map_err(|_| E::custom("epoch milliseconds out of range"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Timestamp, E> {
                if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(Timestamp(v as i64))
                } else {
                    Err(E::custom("epoch milliseconds must be a whole number"))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .description(Some(
                "UTC instant. Output is RFC 3339; input also accepts epoch milliseconds.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

/// The OpenAPI schema of an instant as the API takes it: an RFC 3339 string or epoch
/// milliseconds between `min` and `max`. With `nullable`, `null` too (meaning "absent").
pub fn instant_input_schema(
    min: Timestamp,
    max: Timestamp,
    nullable: bool,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    let mut one_of = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .description(Some("RFC 3339, any offset")),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(min.0))
                .maximum(Some(max.0))
                .description(Some("epoch milliseconds")),
        );
    if nullable {
        one_of = one_of.item(ObjectBuilder::new().schema_type(Type::Null));
    }
    one_of.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_in_utc() {
        let cases = [
            ("2026-11-23T10:00:00Z", 1_795_428_000_000),
            ("2026-11-23T11:00:00+01:00", 1_795_428_000_000),
            ("2026-11-23T10:00:00.250Z", 1_795_428_000_250),
        ];
        for (text, ms) in cases {
            let ts = Timestamp::parse_rfc3339(text).expect(text);
            assert_eq!(ts.0, ms, "{text}");
        }
        assert_eq!(
            Timestamp(1_795_428_000_250).to_rfc3339(),
            "2026-11-23T10:00:00.250Z"
        );
    }

    #[test]
    fn the_rfc3339_range_is_what_rfc3339_can_write() {
        assert_eq!(
            Timestamp::RFC3339_MIN.to_rfc3339(),
            "0000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::RFC3339_MAX.to_rfc3339(),
            "9999-12-31T23:59:59.999Z"
        );
        assert!(Timestamp::RFC3339_MIN.is_rfc3339() && Timestamp::RFC3339_MAX.is_rfc3339());
        for outside in [Timestamp::RFC3339_MIN.0 - 1, Timestamp::RFC3339_MAX.0 + 1] {
            assert!(!Timestamp(outside).is_rfc3339());
            let text = Timestamp(outside).to_rfc3339();
            assert_eq!(Timestamp::parse_rfc3339(&text), None, "{outside}: {text}");
        }
    }

    #[test]
    fn deserializes_numbers_and_strings() {
        let a: Timestamp = serde_json::from_str("1795428000000").unwrap();
        let b: Timestamp = serde_json::from_str("\"2026-11-23T10:00:00Z\"").unwrap();
        assert_eq!(a, b);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
        assert!(serde_json::from_str::<Timestamp>("1.5").is_err());
    }
}

/// Parses a human duration: `250ms`, `5s`, `1m`, `2h`, `1d`, or a bare number of
/// milliseconds. Returns milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 500ms, 5s, 1m, 2h)"))?;
    let factor = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1_000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{text}` (use ms, s, m, h, d)"
            ))
        }
    };
    let ms = value * factor;
    if !ms.is_finite() || ms > 9.0e15 {
        return Err(format!("`{text}` is too long a duration"));
    }
    Ok(ms.round() as i64)
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration_ms;

    #[test]
    fn parses_durations() {
        let ok = [
            ("250ms", 250),
            ("5s", 5_000),
            ("1m", 60_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("1500", 1_500),
            ("0.5s", 500),
        ];
        for (text, ms) in ok {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
        for bad in ["", "s", "5x", "-1s", "1e999s"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }
}
