//! Input checks as data: input text → the violations it must get, pointers included.

use super::*;
use serde_json::json;

fn limits() -> InputLimits {
    InputLimits {
        max_bytes: 200,
        max_depth: 3,
    }
}

/// `Ok` as `[]`; each violation as "pointer: message".
fn outcome(result: Result<impl Sized, InputError>) -> Result<Vec<String>, InputError> {
    match result {
        Ok(_) => Ok(Vec::new()),
        Err(InputError::Invalid(violations)) => {
            Ok(violations.iter().map(Violation::to_string).collect())
        }
        Err(e) => Err(e),
    }
}

#[test]
fn limits_and_control_characters() {
    let deep_ok = r#"{"a":[{"b":1}]}"#; // three levels
    let deep_bad = r#"{"a":[{"b":[1]}]}"#; // four
    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(200));
    let exactly = format!(r#"{{"t":"{}"}}"#, "x".repeat(200 - 8));
    #[rustfmt::skip]
    type Expected = Result<Vec<&'static str>, InputError>;
    let table: Vec<(&str, &str, Expected)> = vec![
        ("plain", r#"{"pages":3,"name":"scan"}"#, Ok(vec![])),
        ("scalars are fine", "42", Ok(vec![])),
        ("exactly at the size limit", &exactly, Ok(vec![])),
        (
            "over the size limit",
            &big,
            Err(InputError::TooLarge { limit: 200 }),
        ),
        ("three levels", deep_ok, Ok(vec![])),
        (
            "four levels",
            deep_bad,
            Ok(vec!["/input/a/0/b: nested deeper than 3 levels"]),
        ),
        (
            "not JSON",
            "{\"a\":",
            Ok(vec![
                "/input: not valid JSON: EOF while parsing a value at line 1 column 5",
            ]),
        ),
        (
            "tab, LF and CR are allowed",
            r#"{"body":"a\tb\nc\r\n"}"#,
            Ok(vec![]),
        ),
        (
            "NUL",
            r#"{"name":"a\u0000b"}"#,
            Ok(vec![
                "/input/name: contains the control character U+0000 at character 1",
            ]),
        ),
        (
            "escape, in an array",
            r#"{"lines":["ok","\u001b[31mred"]}"#,
            Ok(vec![
                "/input/lines/1: contains the control character U+001B at character 0",
            ]),
        ),
        (
            "DEL",
            r#"["\u007f"]"#,
            Ok(vec![
                "/input/0: contains the control character U+007F at character 0",
            ]),
        ),
        (
            "C1",
            r#"["é\u0085"]"#,
            Ok(vec![
                "/input/0: contains the control character U+0085 at character 1",
            ]),
        ),
        ("not C1: U+00A0", r#"["\u00a0"]"#, Ok(vec![])),
        (
            "in a property name",
            r#"{"a":{"b\u0007":1}}"#,
            Ok(vec![
                "/input/a: a property name contains the control character U+0007 at character 1",
            ]),
        ),
        (
            "pointer escaping",
            r#"{"a/b":{"c~d":"\u0001"}}"#,
            Ok(vec![
                "/input/a~1b/c~0d: contains the control character U+0001 at character 0",
            ]),
        ),
        (
            "every problem listed",
            r#"{"x":"\u0002","y":["\u0003"]}"#,
            Ok(vec![
                "/input/x: contains the control character U+0002 at character 0",
                "/input/y/0: contains the control character U+0003 at character 0",
            ]),
        ),
    ];
    for (name, raw, expected) in table {
        let expected = expected.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
        let got = outcome(parse_input(raw.as_bytes(), &limits(), "/input"));
        assert_eq!(got, expected, "case {name:?}");
        // A value parsed elsewhere gets the same verdict but for parse errors.
        if let Ok(value) = serde_json::from_str::<Value>(raw) {
            assert_eq!(
                outcome(check_value(&value, &limits(), "/input")),
                got,
                "value: {name}"
            );
        }
    }
}

#[test]
fn hostile_documents() {
    // Far deeper than serde_json's own recursion limit: refused, not a stack overflow.
    let raw = "[".repeat(100_000);
    let limits = InputLimits {
        max_bytes: 1 << 20,
        max_depth: 32,
    };
    assert_eq!(
        outcome(parse_input(raw.as_bytes(), &limits, "/input")),
        Ok(vec!["/input: nested deeper than 32 levels".to_owned()])
    );
    // A value built in code, deeper than any parser would allow, is walked only to the limit.
    let mut deep = json!(1);
    for _ in 0..10_000 {
        deep = Value::Array(vec![deep]);
    }
    let result = check_value(&deep, &limits, "");
    let Err(InputError::Invalid(violations)) = &result else {
        panic!("{result:?}")
    };
    assert_eq!(violations.len(), 1);
    assert!(violations[0].pointer.starts_with("/0/0/0"));
    std::mem::forget(deep); // dropping 10,000 nested arrays recursively could overflow the test thread
                            // Many bad strings: the list is capped.
    let many: Vec<String> = (0..100).map(|_| "\u{1}".to_owned()).collect();
    let value = json!(many);
    let Err(InputError::Invalid(violations)) = check_value(&value, &limits, "") else {
        panic!("refused")
    };
    assert_eq!(violations.len(), MAX_VIOLATIONS + 1);
    assert_eq!(
        violations[MAX_VIOLATIONS].to_string(),
        "/: and 80 more problems"
    );
}

#[test]
fn statuses() {
    assert_eq!(InputError::TooLarge { limit: 1 }.http_status(), 413);
    assert_eq!(InputError::Invalid(vec![]).http_status(), 422);
    let error = InputError::Invalid(vec![
        Violation {
            pointer: "/input/pages".into(),
            message: "must be ≥ 1".into(),
        },
        Violation {
            pointer: "/input".into(),
            message: "x".into(),
        },
    ]);
    assert_eq!(error.to_string(), "/input/pages: must be ≥ 1; /input: x");
}

fn ocr_schema() -> InputSchema {
    InputSchema::compile(&json!({
        "type": "object",
        "required": ["object", "pages"],
        "additionalProperties": false,
        "properties": {
            "object": {"type": "string", "minLength": 1, "pattern": "^[a-z0-9/._-]+$"},
            "pages": {"type": "integer", "minimum": 1, "maximum": 500},
            "language": {"enum": ["eng", "spa"]},
            "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
            "ratio": {"type": ["number", "null"], "exclusiveMinimum": 0}
        }
    }))
    .expect("a valid schema")
}

#[test]
fn schema_errors_name_pointers() {
    let schema = ocr_schema();
    #[rustfmt::skip]
    let table: Vec<(&str, Value, Vec<&str>)> = vec![
        ("valid", json!({"object": "scans/a.png", "pages": 2, "language": "spa"}), vec![]),
        ("minimum", json!({"object": "a", "pages": 0}), vec!["/input/pages: must be ≥ 1"]),
        ("maximum", json!({"object": "a", "pages": 501}), vec!["/input/pages: must be ≤ 500"]),
        ("type", json!({"object": "a", "pages": "two"}), vec!["/input/pages: must be of type integer"]),
        ("required", json!({"pages": 1}), vec!["/input/object: is required"]),
        ("not allowed", json!({"object": "a", "pages": 1, "colour": true}), vec!["/input/colour: is not allowed"]),
        ("enum", json!({"object": "a", "pages": 1, "language": "fra"}), vec![r#"/input/language: must be one of ["eng","spa"]"#]),
        ("pattern", json!({"object": "A B", "pages": 1}), vec!["/input/object: must match the pattern ^[a-z0-9/._-]+$"]),
        ("min length", json!({"object": "", "pages": 1}), vec![
            "/input/object: must be at least 1 characters long",
            "/input/object: must match the pattern ^[a-z0-9/._-]+$",
        ]),
        ("array items", json!({"object": "a", "pages": 1, "tags": ["x", 2, "z"]}), vec![
            "/input/tags: must have at most 2 items",
            "/input/tags/1: must be of type string",
        ]),
        ("several types, exclusive minimum", json!({"object": "a", "pages": 1, "ratio": 0}), vec!["/input/ratio: must be > 0"]),
        ("several types", json!({"object": "a", "pages": 1, "ratio": "x"}), vec!["/input/ratio: must be of type null or number"]),
        ("top level", json!([1]), vec!["/input: must be of type object"]),
    ];
    for (name, input, expected) in table {
        let mut got = outcome(schema.validate(&input, "/input")).expect("invalid, not too large");
        got.sort();
        let mut expected: Vec<String> = expected.into_iter().map(String::from).collect();
        expected.sort();
        assert_eq!(got, expected, "case {name:?}");
    }
}

#[test]
fn sanitise_runs_limits_before_the_schema() {
    let schema = ocr_schema();
    let input = json!({"object": "a\u{0}", "pages": 0});
    // The control character is reported; the schema is not consulted for a refused input.
    assert_eq!(
        outcome(sanitise(&input, &limits(), Some(&schema), "/input")),
        Ok(vec![
            "/input/object: contains the control character U+0000 at character 1".to_owned()
        ])
    );
    let big = json!({"object": "a".repeat(300), "pages": 1});
    assert_eq!(
        sanitise(&big, &limits(), Some(&schema), "/input"),
        Err(InputError::TooLarge { limit: 200 })
    );
    assert_eq!(
        sanitise(&json!({"anything": 1}), &limits(), None, "/input"),
        Ok(())
    );
}

#[test]
fn schemas_that_cannot_be_used() {
    let table = [
        json!({"type": "no-such-type"}),
        // Never fetched: remote and file references fail at registration.
        json!({"$ref": "https://example.com/schema.json"}),
        json!({"$ref": "file:///etc/passwd"}),
        // Look-around needs backtracking; the linear-time engine refuses it.
        json!({"pattern": "^(?=a)a$"}),
    ];
    for schema in table {
        assert!(InputSchema::compile(&schema).is_err(), "{schema} compiled");
    }
    // A local reference resolves.
    let local = InputSchema::compile(&json!({
        "$defs": {"positive": {"type": "integer", "minimum": 1}},
        "properties": {"pages": {"$ref": "#/$defs/positive"}}
    }))
    .expect("local refs resolve");
    assert_eq!(
        outcome(local.validate(&json!({"pages": 0}), "/input")),
        Ok(vec!["/input/pages: must be ≥ 1".to_owned()])
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Strings over a small alphabet that includes allowed and refused controls, and the
    /// pointer-escaped `~` and `/`.
    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just('a'),
                Just('~'),
                Just('/'),
                Just('\t'),
                Just('\n'),
                Just('\u{0}'),
                Just('\u{1b}'),
                Just('\u{85}'),
                Just('é'),
            ],
            0..6,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 48, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(text(), inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn has_refused_control(value: &Value) -> bool {
        let refused = |s: &str| s.chars().any(is_refused_control);
        match value {
            Value::String(s) => refused(s),
            Value::Array(items) => items.iter().any(has_refused_control),
            Value::Object(fields) => fields
                .iter()
                .any(|(key, item)| refused(key) || has_refused_control(item)),
            _ => false,
        }
    }

    proptest! {
        /// Refused exactly when too deep or holding a refused control character, and every
        /// pointer in the refusal names a real place in the value.
        #[test]
        fn verdicts_and_pointers(value in json(), max_depth in 1usize..5) {
            let limits = InputLimits { max_bytes: 1 << 20, max_depth };
            let too_deep = depth(&value) > max_depth;
            match check_value(&value, &limits, "/input") {
                Ok(()) => prop_assert!(!too_deep && !has_refused_control(&value)),
                Err(InputError::Invalid(violations)) => {
                    prop_assert!(too_deep || has_refused_control(&value));
                    for violation in &violations {
                        if violation.message.starts_with("and ") {
                            continue;
                        }
                        let inner = violation.pointer.strip_prefix("/input").expect("based");
                        prop_assert!(value.pointer(inner).is_some(), "{} not in {}", inner, value);
                    }
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }
}
