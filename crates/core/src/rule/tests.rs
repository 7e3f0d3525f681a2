//! Rule parsing and validation as data.

use super::*;

#[test]
fn parses_flat_rule_json_and_names_it() {
    let mut rules: Vec<Rule> = serde_json::from_str(
        r#"[{"kind":"threshold","max":-18,"severity":"critical"},
            {"kind":"rate","max_per_min":1.5,"direction":"rise","severity":"warning"},
            {"kind":"threshold","min":20,"max":80,"metric":"humidity","severity":"warning"}]"#,
    )
    .unwrap();
    let mut errors = vec![];
    normalise_rules(&mut rules, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let names: Vec<_> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "threshold-critical",
            "rate-warning",
            "threshold-warning-humidity"
        ]
    );
}

#[test]
fn rejects_bad_rules_naming_fields() {
    let cases: &[(&str, &str)] = &[
        (
            r#"[{"kind":"threshold","severity":"critical"}]"#,
            "rules[0].max",
        ),
        (
            r#"[{"kind":"threshold","min":5,"max":1,"severity":"critical"}]"#,
            "rules[0].min",
        ),
        (
            r#"[{"kind":"rate","max_per_min":0,"severity":"warning"}]"#,
            "rules[0].max_per_min",
        ),
        (
            r#"[{"kind":"rate","max_per_min":1,"severity":"warning"},{"kind":"rate","max_per_min":2,"severity":"warning"}]"#,
            "rules[1].name",
        ),
    ];
    for (json, field) in cases {
        let mut rules: Vec<Rule> = serde_json::from_str(json).unwrap();
        let mut errors = vec![];
        normalise_rules(&mut rules, &mut errors);
        assert_eq!(errors.len(), 1, "{json}: {errors:?}");
        assert_eq!(errors[0].field, *field, "{json}");
    }
    assert!(
        serde_json::from_str::<Vec<Rule>>(r#"[{"kind":"median","severity":"warning"}]"#).is_err()
    );
    assert!(serde_json::from_str::<Vec<Rule>>(
        r#"[{"kind":"threshold","max":1,"severity":"meh"}]"#
    )
    .is_err());
    // Only documented names: serde's tagged enums would take the variant index too.
    for json in [
        r#"[{"kind":0,"max":1,"severity":"warning"}]"#,
        r#"[{"kind":1,"max_per_min":1,"severity":"warning"}]"#,
        r#"[{"kind":"rate","max_per_min":1,"min":null,"severity":"warning"}]"#,
        r#"[{"kind":"rate","max_per_min":null,"severity":"warning"}]"#,
        r#"[{"kind":"rate","direction":null,"max_per_min":1,"severity":"warning"}]"#,
        r#"[{"kind":"rate","severity":"warning"}]"#,
        r#"[{"kind":"threshold","max":1,"direction":"rise","severity":"warning"}]"#,
        r#"[{"kind":"threshold","max":1,"colour":"red","severity":"warning"}]"#,
    ] {
        assert!(serde_json::from_str::<Vec<Rule>>(json).is_err(), "{json}");
    }
    let rules: Vec<Rule> = serde_json::from_str(
        r#"[{"kind":"threshold","min":null,"max":1,"severity":"warning"},
            {"kind":"rate","max_per_min":2,"severity":"critical"}]"#,
    )
    .unwrap();
    assert_eq!(
        rules[0].condition,
        Condition::Threshold {
            min: None,
            max: Some(1.0)
        }
    );
    assert_eq!(
        rules[1].condition,
        Condition::Rate {
            max_per_min: 2.0,
            direction: RateDirection::Both
        }
    );
}

fn normalised(json: &str) -> Result<Vec<Rule>, Vec<FieldError>> {
    let mut rules: Vec<Rule> =
        serde_json::from_str(json).map_err(|e| vec![FieldError::new("json", e.to_string())])?;
    let mut errors = vec![];
    normalise_rules(&mut rules, &mut errors);
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

/// A duration rule's name, severity, `warn_after`, `critical_after` (ms) and window.
type Stage<'a> = (&'a str, Severity, Option<i64>, Option<i64>, DurationWindow);

#[test]
fn a_two_stage_duration_rule_splits_into_named_stages() {
    let rules = normalised(
        r#"[{"kind":"duration","name":"cold","max":-18,"warn_after":"2h","critical_after":"4h","window":"24h"},
            {"kind":"duration","max":-18,"warn_after":"30m","critical_after":"1h","window":"batch","metric":"probe"},
            {"kind":"duration","min":2,"max":8,"critical_after":"4h"}]"#,
    )
    .unwrap();
    let got: Vec<Stage> = rules
        .iter()
        .map(|r| match &r.condition {
            Condition::Duration {
                warn_after,
                critical_after,
                window,
                ..
            } => (
                r.name.as_str(),
                r.severity,
                warn_after.map(|d| d.0),
                critical_after.map(|d| d.0),
                *window,
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    let day = DurationWindow::Rolling(DurationMs(86_400_000));
    assert_eq!(
        got,
        [
            (
                "cold-warning",
                Severity::Warning,
                Some(7_200_000),
                None,
                day
            ),
            (
                "cold-critical",
                Severity::Critical,
                None,
                Some(14_400_000),
                day
            ),
            (
                "duration-warning-probe",
                Severity::Warning,
                Some(1_800_000),
                None,
                DurationWindow::Batch
            ),
            (
                "duration-critical-probe",
                Severity::Critical,
                None,
                Some(3_600_000),
                DurationWindow::Batch
            ),
            (
                "duration-critical",
                Severity::Critical,
                None,
                Some(14_400_000),
                day
            ),
        ]
    );
    // Stored and read back, the stages stay as they are.
    let json = serde_json::to_string(&rules).unwrap();
    assert!(json.contains(r#""warn_after":"2h""#), "{json}");
    assert!(json.contains(r#""window":"batch""#), "{json}");
    assert_eq!(normalised(&json).unwrap(), rules);
}

#[test]
fn anomaly_and_offline_rules_take_their_defaults() {
    let rules = normalised(
        r#"[{"kind":"anomaly"},
            {"kind":"anomaly","name":"odd","sensitivity":2,"warmup":"30m","flatline":null,"severity":"critical"},
            {"kind":"offline","expected":"5s","grace":"60s"},
            {"kind":"offline","expected":"1m","metric":"humidity"}]"#,
    )
    .unwrap();
    let got: Vec<(&str, Severity, &Condition)> = rules
        .iter()
        .map(|r| (r.name.as_str(), r.severity, &r.condition))
        .collect();
    assert_eq!(
        got,
        [
            (
                "anomaly-warning",
                Severity::Warning,
                &Condition::Anomaly {
                    sensitivity: 1.0,
                    warmup: DurationMs(3_600_000),
                    flatline: Some(DurationMs(1_800_000))
                }
            ),
            (
                "odd",
                Severity::Critical,
                &Condition::Anomaly {
                    sensitivity: 2.0,
                    warmup: DurationMs(1_800_000),
                    flatline: None
                }
            ),
            (
                "offline-warning",
                Severity::Warning,
                &Condition::Offline {
                    expected: DurationMs(5_000),
                    grace: DurationMs(60_000)
                }
            ),
            (
                "offline-warning-humidity",
                Severity::Warning,
                &Condition::Offline {
                    expected: DurationMs(60_000),
                    grace: DurationMs(60_000)
                }
            ),
        ]
    );
    assert_eq!(
        normalised(&serde_json::to_string(&rules).unwrap()).unwrap(),
        rules
    );
}

#[test]
fn bad_new_rules_name_their_field() {
    let stage = "n".repeat(MAX_STAGED_RULE_NAME_LEN + 1);
    let long_name = format!(
        r#"[{{"kind":"duration","name":"{stage}","max":1,"warn_after":"1h","critical_after":"2h"}}]"#
    );
    let cases: Vec<(&str, &str)> = vec![
        (
            r#"[{"kind":"duration","max":-18,"warn_after":"4h","critical_after":"2h"}]"#,
            "rules[0].warn_after",
        ),
        (
            r#"[{"kind":"duration","max":-18,"warn_after":"2h","critical_after":"2h"}]"#,
            "rules[0].warn_after",
        ),
        (
            r#"[{"kind":"duration","max":-18,"warn_after":"0s"}]"#,
            "rules[0].warn_after",
        ),
        (
            r#"[{"kind":"duration","max":-18,"critical_after":"0.0001s"}]"#,
            "rules[0].critical_after",
        ),
        (r#"[{"kind":"duration","max":-18}]"#, "rules[0].warn_after"),
        (r#"[{"kind":"duration","warn_after":"2h"}]"#, "rules[0].max"),
        (
            r#"[{"kind":"duration","min":5,"max":1,"warn_after":"2h"}]"#,
            "rules[0].min",
        ),
        (
            r#"[{"kind":"duration","max":1,"warn_after":"2h","window":"0s"}]"#,
            "rules[0].window",
        ),
        (
            r#"[{"kind":"duration","max":1,"critical_after":"25h","window":"24h"}]"#,
            "rules[0].critical_after",
        ),
        (&long_name, "rules[0].name"),
        (
            r#"[{"kind":"anomaly","sensitivity":0}]"#,
            "rules[0].sensitivity",
        ),
        (
            r#"[{"kind":"anomaly","sensitivity":11}]"#,
            "rules[0].sensitivity",
        ),
        (r#"[{"kind":"anomaly","warmup":"0s"}]"#, "rules[0].warmup"),
        (
            r#"[{"kind":"anomaly","flatline":"0ms"}]"#,
            "rules[0].flatline",
        ),
        (
            r#"[{"kind":"offline","expected":"0s"}]"#,
            "rules[0].expected",
        ),
        (
            r#"[{"kind":"offline","expected":"5s","grace":"0s"}]"#,
            "rules[0].grace",
        ),
        (
            r#"[{"kind":"threshold","name":"cold-warning","max":1,"severity":"warning"},
                {"kind":"duration","name":"cold","max":1,"warn_after":"1h","critical_after":"2h"}]"#,
            "rules[1].name",
        ),
        (
            r#"[{"kind":"duration","name":"cold","max":1,"warn_after":"1h","critical_after":"2h"},
                {"kind":"offline","name":"cold-critical","expected":"5s"}]"#,
            "rules[1].name",
        ),
    ];
    for (json, field) in cases {
        let errors = normalised(json).expect_err(json);
        assert_eq!(errors.len(), 1, "{json}: {errors:?}");
        assert_eq!(errors[0].field, field, "{json}: {errors:?}");
    }
    // Unreadable or misplaced fields fail to parse, naming the field in the message.
    for (json, words) in [
        (r#"[{"kind":"duration","max":1,"warn_after":"2x"}]"#, "invalid `warn_after`"),
        (r#"[{"kind":"duration","max":1,"warn_after":"2h","window":"daily"}]"#, "invalid `window`"),
        (r#"[{"kind":"duration","max":1,"warn_after":"-2h"}]"#, "invalid `warn_after`"),
        (r#"[{"kind":"duration","max":1,"warn_after":"2h","max_per_min":1}]"#, "unknown field `max_per_min`, expected `min`, `max`, `warn_after`, `critical_after` or `window`"),
        (r#"[{"kind":"duration","max":1,"warn_after":"2h","critical_after":"4h","severity":"warning"}]"#, "`severity` of a duration rule follows its stage"),
        (r#"[{"kind":"duration","max":1,"warn_after":"2h","severity":"critical"}]"#, "`severity` of a duration rule follows its stage"),
        (r#"[{"kind":"anomaly","expected":"5s"}]"#, "unknown field `expected`"),
        (r#"[{"kind":"anomaly","warmup":60}]"#, "invalid type"),
        (r#"[{"kind":"offline"}]"#, "missing field `expected`"),
        (r#"[{"kind":"offline","expected":"5s","min":1}]"#, "unknown field `min`, expected `expected` or `grace`"),
        (r#"[{"kind":"threshold","max":1}]"#, "missing field `severity`"),
    ] {
        let err = serde_json::from_str::<Vec<Rule>>(json).expect_err(json).to_string();
        assert!(err.contains(words), "{json}: {err}");
    }
}

#[test]
fn the_rule_limit_counts_split_stages() {
    let staged = r#"{"kind":"duration","max":1,"warn_after":"1h","critical_after":"2h"}"#;
    let named = |i: usize| staged.replacen('{', &format!(r#"{{"name":"d{i}","#), 1);
    let sixteen: Vec<String> = (0..16).map(named).collect();
    assert_eq!(
        normalised(&format!("[{}]", sixteen.join(",")))
            .unwrap()
            .len(),
        32
    );
    let seventeen: Vec<String> = (0..17).map(named).collect();
    let errors = normalised(&format!("[{}]", seventeen.join(","))).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "rules");
    assert!(errors[0].message.contains("(34 here)"), "{errors:?}");
    let threshold = r#"{"kind":"threshold","max":1,"severity":"warning"}"#;
    let many: Vec<String> = (0..33)
        .map(|i| threshold.replacen('{', &format!(r#"{{"name":"t{i}","#), 1))
        .collect();
    let errors = normalised(&format!("[{}]", many.join(","))).unwrap_err();
    assert_eq!(errors[0].message, "at most 32 rules per sensor");
}

#[test]
fn durations_write_back_in_their_largest_whole_unit() {
    for (ms, text) in [
        (7_200_000, "2h"),
        (86_400_000, "24h"),
        (90_000, "90s"),
        (1_500, "1500ms"),
        (0, "0ms"),
        (5_400_000, "90m"),
    ] {
        assert_eq!(DurationMs(ms).to_string(), text);
    }
}
