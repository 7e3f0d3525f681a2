//! The OpenAPI schema of a rule, written by hand: every constraint [`Rule::normalise`]
//! checks that JSON Schema can express.

use super::{Rule, Severity, MAX_METRIC_LEN, MAX_RULE_NAME_LEN, SENSITIVITY_RANGE};
use crate::{RateDirection, DEFAULT_METRIC};

/// The rule as the OpenAPI document states it. Overlapping shapes (`anyOf`): a threshold
/// with `min`, a threshold with `max` (either or both), a rate, a duration rule with
/// `min` or `max`, an anomaly and an offline rule. The checks it cannot express the
/// descriptions say: `min` ≤ `max`, `warn_after` < `critical_after` ≤ `window`, and
/// unique effective names within a sensor.
impl utoipa::PartialSchema for Rule {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        rule_schema(false)
    }
}

impl utoipa::ToSchema for Rule {}

/// A rule as `PUT /api/v1/sensors/{key}` takes it: [`Rule`]'s schema, with the limit on
/// a given `name` (a default name may be longer, so answers carry no such limit).
/// Documentation only.
pub struct RuleSpec;

impl utoipa::PartialSchema for RuleSpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        rule_schema(true)
    }
}

impl utoipa::ToSchema for RuleSpec {}

/// The rule's schema; `input` adds the limit on a given name.
/// A duration as the schema states it: a positive whole number and a unit (`ms` when none).
const DURATION_PATTERN: &str = "^[0-9]*[1-9][0-9]*(ms|s|m|min|h|d)?$";
/// A duration rule's window: `batch` or a duration.
const WINDOW_PATTERN: &str = "^(batch|[0-9]*[1-9][0-9]*(ms|s|m|min|h|d)?)$";

fn rule_schema(input: bool) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, SchemaType, Type};

    let number = || ObjectBuilder::new().schema_type(Type::Number);
    let number_or_null =
        || ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::Number, Type::Null]));
    // Whole numbers only in the pattern (fractions are accepted too, but one rounding to
    // 0 ms is refused), at most 8 characters so the value stays far inside the limit.
    let duration = |what: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(DURATION_PATTERN))
            .max_length(Some(8))
            .description(Some(format!(
                "{what}: a number, then `ms` (the default), `s`, `m`/`min`, `h` or `d`, \
             e.g. `90s`, `2h`; longer than zero."
            )))
    };
    // The fields every rule has, then the condition's own. `severity` is required where
    // the kind does not imply it.
    let base = |kind: &str, severity_required: bool| {
        let object = ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::<
                utoipa::openapi::schema::Schema,
            >::FreeForm(false)))
            .property(
                "kind",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([kind])),
            )
            .required("kind")
            .property(
                "name",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(input.then_some(MAX_RULE_NAME_LEN))
                    .description(Some(
                        "Unique among the sensor's rules. Empty or blank means \
                         `<kind>-<severity>` (plus `-<metric>` for a metric other than \
                         temperature). A duration rule with both stages is split into \
                         `<name>-warning` and `<name>-critical` (so its name is at most 55 \
                         characters).",
                    )),
            )
            .property(
                "metric",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(MAX_METRIC_LEN))
                    .default(Some(DEFAULT_METRIC.into())),
            );
        if severity_required {
            object
                .property("severity", <Severity as utoipa::PartialSchema>::schema())
                .required("severity")
        } else {
            // Optional: absent or `null` means the kind's default.
            object.property(
                "severity",
                utoipa::openapi::schema::OneOfBuilder::new()
                    .item(<Severity as utoipa::PartialSchema>::schema())
                    .item(ObjectBuilder::new().schema_type(Type::Null)),
            )
        }
    };
    let threshold = |bound: &str, other: &str| {
        base("threshold", true)
            .description(Some(
                "The value must stay within `[min, max]`; at least one bound, `min` ≤ `max`.",
            ))
            .property(bound, number())
            .required(bound)
            .property(other, number_or_null())
    };
    let rate = base("rate", true)
        .description(Some(
            "The value must not change faster than `max_per_min` units per minute.",
        ))
        .property("max_per_min", number().exclusive_minimum(Some(0)))
        .required("max_per_min")
        .property(
            "direction",
            <RateDirection as utoipa::PartialSchema>::schema(),
        );
    let cumulative = |bound: &str, other: &str| {
        base("duration", false)
            .description(Some(
                "The time outside `[min, max]`, added up over `window` in event time, must \
                 stay under `warn_after` (a warning) and `critical_after` (critical); one \
                 good reading does not reset it, and a silence while out of range counts as \
                 out of range. At least one stage, `warn_after` < `critical_after` ≤ \
                 `window`; `severity` follows the stage.",
            ))
            .property(bound, number())
            .required(bound)
            .property(other, number_or_null())
            .property("warn_after", duration("Time out of range that warns"))
            .property(
                "critical_after",
                duration("Time out of range that is critical"),
            )
            .property(
                "window",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(WINDOW_PATTERN))
                    .max_length(Some(8))
                    .default(Some("24h".into()))
                    .description(Some(
                        "`batch` (since the sensor's current product lot) or a rolling \
                         duration such as `24h`.",
                    )),
            )
    };
    let (least, most) = SENSITIVITY_RANGE;
    let anomaly = base("anomaly", false)
        .description(Some(
            "The value must look like its own recent past: no spike, level shift, drift or \
             flat line. Nothing alerts during `warmup`. `severity` defaults to `warning`.",
        ))
        .property(
            "sensitivity",
            number()
                .minimum(Some(least))
                .maximum(Some(most))
                .default(Some(1.0.into()))
                .description(Some("2 alerts at half the deviation 1 does.")),
        )
        .property(
            "warmup",
            duration("Learning time with no alerts (default `1h`)"),
        )
        .property(
            "flatline",
            duration(
                "How long one value may repeat on a sensor that normally varies (default \
                 `30m`; `null`: never alert on it)",
            )
            .schema_type(SchemaType::from_iter([Type::String, Type::Null])),
        );
    let offline = base("offline", false)
        .description(Some(
            "Readings of the metric must keep arriving: an alert after `expected + grace` \
             of silence (wall clock), resolved once readings have flowed again for the \
             resolve hold. `severity` defaults to `warning`.",
        ))
        .property("expected", duration("How often readings come"))
        .required("expected")
        .property(
            "grace",
            duration("Silence tolerated past `expected` (default `60s`)"),
        );
    AnyOfBuilder::new()
        .item(threshold("min", "max"))
        .item(threshold("max", "min"))
        .item(rate)
        .item(cumulative("min", "max"))
        .item(cumulative("max", "min"))
        .item(anomaly)
        .item(offline)
        .description(Some(
            "A threshold (`kind: threshold`, `min` and/or `max`), rate of change \
             (`kind: rate`, `max_per_min`), cumulative time out of range (`kind: duration`), \
             anomaly (`kind: anomaly`) or silence (`kind: offline`) rule on one metric.",
        ))
        .into()
}
