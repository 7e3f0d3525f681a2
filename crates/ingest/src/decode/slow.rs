//! The decoder's slow path: re-reads a body the fast path refused, tolerantly, to name
//! every bad row and field (or the line and column of a syntax error).

use std::borrow::Cow;

use serde::de::IgnoredAny;
use vigia_core::sensor::validate_sensor_key;
use vigia_core::Timestamp;

use super::{
    check_metric, check_ts, check_value, DecodeError, DecodeLimits, RowError, MAX_LISTED_ERRORS,
};

/// Explains why the fast path failed, row by row.
pub(super) fn slow_path(
    body: &[u8],
    now: Timestamp,
    limits: &DecodeLimits,
    fast_error: &serde_json::Error,
) -> DecodeError {
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => return malformed_at(body, e.valid_up_to(), "invalid UTF-8"),
    };
    // Syntax first. `IgnoredAny` only scans numbers, so `1e999` passes here and is
    // reported below as a value that is not finite rather than as broken JSON.
    if let Err(e) = serde_json::from_str::<IgnoredAny>(text) {
        return malformed(text, e);
    }
    let mut report = Report::default();
    let mut scan = Scan { text, pos: 0 };
    let rows = match scan.top_level() {
        TopLevel::Array => {
            let mut rows = 0;
            while let Some(item) = scan.next_item() {
                if rows < limits.max_rows {
                    check_row(item, Some(rows), now, limits, &mut report);
                }
                rows += 1;
            }
            rows
        }
        TopLevel::Object => {
            check_row(scan.value(), None, now, limits, &mut report);
            1
        }
        TopLevel::Other(kind) => {
            let message = format!("expected a reading object or an array of them, got {kind}");
            report.row(None, vec![("".into(), message)]);
            1
        }
    };
    if rows > limits.max_rows {
        return DecodeError::TooManyRows {
            rows,
            max: limits.max_rows,
        };
    }
    if rows == 0 {
        return DecodeError::Empty;
    }
    if report.rows_with_errors == 0 {
        // The paths disagree, which is a bug here; still refuse with what we know.
        report.row(
            None,
            vec![("".into(), format!("could not be read: {fast_error}"))],
        );
    }
    DecodeError::Invalid {
        errors: report.errors,
        rows_with_errors: report.rows_with_errors,
    }
}

fn malformed(text: &str, e: serde_json::Error) -> DecodeError {
    // The full parser words some errors better ("trailing comma"); use its words when it
    // stops at the same spot.
    let (mut line, mut column, mut message) = (e.line(), e.column(), e.to_string());
    if let Err(full) = serde_json::from_str::<serde_json::Value>(text) {
        if (full.line(), full.column()) == (line, column) {
            (line, column, message) = (full.line(), full.column(), full.to_string());
        }
    }
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    DecodeError::Malformed {
        message,
        line,
        column,
    }
}

fn malformed_at(body: &[u8], offset: usize, message: &str) -> DecodeError {
    let before = &body[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |nl| nl + 1);
    let column = offset - line_start + 1;
    DecodeError::Malformed {
        message: message.to_string(),
        line,
        column,
    }
}

#[derive(Default)]
struct Report {
    errors: Vec<RowError>,
    rows_with_errors: usize,
}

impl Report {
    /// Records one row's problems (none means the row is good).
    fn row(&mut self, row: Option<usize>, problems: Vec<(Cow<'_, str>, String)>) {
        if problems.is_empty() {
            return;
        }
        self.rows_with_errors += 1;
        for (field, message) in problems {
            if self.errors.len() < MAX_LISTED_ERRORS {
                let field = field.into_owned();
                self.errors.push(RowError {
                    row,
                    field,
                    message,
                });
            }
        }
    }
}

/// A JSON value as the slow path sees it: scalars kept as source text, containers
/// only named (a reading has no nested fields).
#[derive(Clone, Copy)]
enum Json<'a> {
    Null,
    Bool,
    Number(&'a str),
    /// A string literal including its quotes, still escaped.
    String(&'a str),
    Array,
    Object(&'a str),
}

impl Json<'_> {
    fn kind(self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array => "an array",
            Json::Object(_) => "an object",
        }
    }
}

/// The text of a JSON string literal (quotes included), unescaped.
fn unescape(literal: &str) -> Cow<'_, str> {
    let inner = &literal[1..literal.len() - 1];
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    // The literal passed the syntax check, so decoding it cannot fail.
    serde_json::from_str::<String>(literal).map_or(Cow::Borrowed(inner), Cow::Owned)
}

/// The fields a reading may have, in the order errors are reported.
const FIELDS: [&str; 4] = ["sensor", "metric", "ts", "value"];

fn expected(what: &str, got: Json<'_>) -> String {
    format!("must be {what}, got {}", got.kind())
}

fn check_row(
    item: Json<'_>,
    row: Option<usize>,
    now: Timestamp,
    limits: &DecodeLimits,
    report: &mut Report,
) {
    let Json::Object(body) = item else {
        let message = expected("an object with `sensor` and `value`", item);
        return report.row(row, vec![("".into(), message)]);
    };
    let mut problems = Vec::new();
    let mut found: [Option<Json<'_>>; 4] = [None; 4];
    let mut scan = Scan { text: body, pos: 0 };
    while let Some((key, value)) = scan.next_field() {
        match FIELDS.iter().position(|f| *f == key) {
            Some(i) if found[i].is_some() => problems.push((key, "appears more than once".into())),
            Some(i) => found[i] = Some(value),
            None => {
                let message = "is not a known field (expected `sensor`, `metric`, `ts` or `value`)";
                problems.push((key, message.into()));
            }
        }
    }
    let [sensor, metric, ts, value] = found;
    let outcomes: [(&str, Result<(), String>); 4] = [
        (
            "sensor",
            match sensor {
                None => Err("is required".into()),
                Some(Json::String(lit)) => validate_sensor_key(&unescape(lit)).map_err(Into::into),
                Some(other) => Err(expected("a string", other)),
            },
        ),
        (
            "metric",
            match metric {
                None | Some(Json::Null) => Ok(()),
                Some(Json::String(lit)) => check_metric(&unescape(lit)).map_err(Into::into),
                Some(other) => Err(expected("a string", other)),
            },
        ),
        (
            "ts",
            timestamp(ts, now).and_then(|ts| check_ts(ts, now, limits)),
        ),
        (
            "value",
            match value {
                None => Err("is required".into()),
                // std parses overflow to infinity where serde_json errors; both are refused.
                Some(Json::Number(text)) => match text.parse::<f64>() {
                    Ok(v) => check_value(v).map_err(Into::into),
                    Err(_) => Err("must be a finite number".into()),
                },
                Some(other) => Err(expected("a number", other)),
            },
        ),
    ];
    for (field, outcome) in outcomes {
        if let Err(message) = outcome {
            problems.push((field.into(), message));
        }
    }
    report.row(row, problems);
}

/// `ts` as `Timestamp`'s deserializer takes it; absent or null means now.
fn timestamp(ts: Option<Json<'_>>, now: Timestamp) -> Result<Timestamp, String> {
    match ts {
        None | Some(Json::Null) => Ok(now),
        Some(Json::String(lit)) => Timestamp::parse_rfc3339(&unescape(lit))
            .ok_or_else(|| "is not an RFC 3339 timestamp (e.g. 2026-11-23T10:00:00Z)".into()),
        Some(Json::Number(text)) => epoch_millis(text).map_err(Into::into),
        Some(other) => Err(expected("an RFC 3339 string or epoch milliseconds", other)),
    }
}

/// Epoch milliseconds as `Timestamp`'s deserializer takes them: integers, or whole
/// floats below 9e15.
fn epoch_millis(text: &str) -> Result<Timestamp, &'static str> {
    if !text.contains(['.', 'e', 'E']) {
        return text
            .parse::<i64>()
            .map(Timestamp)
            .map_err(|_| "epoch milliseconds out of range");
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 => Ok(Timestamp(v as i64)),
        _ => Err("epoch milliseconds must be a whole number"),
    }
}

enum TopLevel {
    Array,
    Object,
    Other(&'static str),
}

/// A cursor over text that already passed the syntax check, so it only has to find
/// boundaries, never to diagnose. Containers are skipped iteratively (no recursion,
/// whatever the nesting depth).
struct Scan<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scan<'a> {
    fn peek(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        bytes.get(self.pos).copied()
    }

    fn top_level(&mut self) -> TopLevel {
        match self.peek() {
            Some(b'[') => {
                self.pos += 1;
                TopLevel::Array
            }
            Some(b'{') => TopLevel::Object,
            _ => TopLevel::Other(self.value().kind()),
        }
    }

    /// The next element of the array just opened, or `None` at its end.
    fn next_item(&mut self) -> Option<Json<'a>> {
        if self.peek() == Some(b',') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b']') | None => None,
            Some(_) => Some(self.value()),
        }
    }

    /// The next `key: value` of an object's text (`{…}` included), or `None` at its end.
    fn next_field(&mut self) -> Option<(Cow<'a, str>, Json<'a>)> {
        if matches!(self.peek(), Some(b'{' | b',')) {
            self.pos += 1;
        }
        if self.peek() != Some(b'"') {
            return None;
        }
        let key = unescape(self.string());
        self.peek();
        self.pos += 1; // the colon
        Some((key, self.value()))
    }

    fn value(&mut self) -> Json<'a> {
        let first = self.peek();
        let start = self.pos;
        match first {
            Some(b'"') => Json::String(self.string()),
            Some(b'n') => self.literal(4, Json::Null),
            Some(b't') => self.literal(4, Json::Bool),
            Some(b'f') => self.literal(5, Json::Bool),
            Some(b'[') => {
                self.skip_container();
                Json::Array
            }
            Some(b'{') => {
                self.skip_container();
                Json::Object(&self.text[start..self.pos])
            }
            _ => {
                let bytes = self.text.as_bytes();
                while self.pos < bytes.len()
                    && matches!(
                        bytes[self.pos],
                        b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'
                    )
                {
                    self.pos += 1;
                }
                Json::Number(&self.text[start..self.pos])
            }
        }
    }

    fn literal(&mut self, len: usize, json: Json<'a>) -> Json<'a> {
        self.pos += len;
        json
    }

    /// A string literal starting at the cursor, quotes included.
    fn string(&mut self) -> &'a str {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        self.pos += 1;
        while self.pos < bytes.len() {
            match bytes[self.pos] {
                b'\\' => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    break;
                }
                _ => self.pos += 1,
            }
        }
        &self.text[start..self.pos.min(bytes.len())]
    }

    fn skip_container(&mut self) {
        let bytes = self.text.as_bytes();
        let mut depth = 0usize;
        while self.pos < bytes.len() {
            match bytes[self.pos] {
                b'"' => {
                    self.string();
                    continue;
                }
                b'[' | b'{' => depth += 1,
                b']' | b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        self.pos += 1;
                        return;
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
    }
}
