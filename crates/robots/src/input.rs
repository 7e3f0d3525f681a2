//! The seed's `SecurityValidator` input sanitisation, pure: a robot's `input` is bounded in
//! size and depth, carries no control characters, and matches its module's JSON Schema.
//! Every refusal names the JSON pointer it is about (`/input/pages: must be ≥ 1`).
//!
//! - **Size** ([`InputError::TooLarge`], 413): the raw bytes before parsing
//!   ([`parse_input`]), or the compact serialisation of a value already parsed
//!   ([`check_value`], counted without building it and stopping at the limit).
//! - **Depth** (422): objects and arrays nest at most [`InputLimits::max_depth`] levels (the
//!   top-level object is level 1; scalars add none). Checked without recursion past the limit,
//!   so a hostile document cannot overflow the stack.
//! - **Control characters** (422): refused in strings and property names: U+0000–U+001F but
//!   tab, line feed and carriage return, U+007F and U+0080–U+009F. Tab and line breaks stay
//!   because real inputs carry them (an e-mail body, a mail filter, OCR'd text) and they are
//!   harmless to everything downstream: values only ever reach SQL as bound parameters and
//!   URLs percent-encoded. The rest have no business in a job's input and are the usual
//!   vehicle for log injection and terminal escapes.
//! - **Schema** (422): [`InputSchema`] wraps a `jsonschema` validator built offline (no
//!   `$ref` is ever fetched over the network or from files: the crate's resolvers are not
//!   compiled in) with the linear-time `regex` engine for `pattern` (a module's schema cannot
//!   make validation backtrack for ever). Every error is listed, each with its pointer.

use std::fmt;
use std::io;

use serde_json::Value;

use crate::ConfigError;

/// Bounds on a robot's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputLimits {
    /// Bytes of JSON at most. Default 262,144 (256 KiB): jobs carry references to objects
    /// (an image in the object store), not the objects.
    pub max_bytes: usize,
    /// Nesting levels at most. Default 32.
    pub max_depth: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024,
            max_depth: 32,
        }
    }
}

impl InputLimits {
    /// Checks that an input can pass at all: some bytes and at least one level.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_bytes == 0 {
            return Err(ConfigError::new("input", "max_bytes", "must be positive"));
        }
        if self.max_depth == 0 {
            return Err(ConfigError::new("input", "max_depth", "must be at least 1"));
        }
        Ok(())
    }
}

/// At most this many violations are listed; past it one more says how many were left out,
/// so a hostile input cannot make the error body as large as itself.
pub const MAX_VIOLATIONS: usize = 20;

/// One reason an input is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The JSON pointer (RFC 6901) of the offending value, from the request body's root.
    pub pointer: String,
    /// What is wrong with it, for a person.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{pointer}: {}", self.message)
    }
}

/// Why an input is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Over [`InputLimits::max_bytes`]: 413.
    #[error("input is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Not JSON, too deep, a control character, or against the module's schema: 422.
    #[error("{}", list(.0))]
    Invalid(Vec<Violation>),
}

impl InputError {
    /// The HTTP status this refusal maps to.
    pub fn http_status(&self) -> u16 {
        match self {
            InputError::TooLarge { .. } => 413,
            InputError::Invalid(_) => 422,
        }
    }
}

fn list(violations: &[Violation]) -> String {
    let parts: Vec<String> = violations.iter().map(Violation::to_string).collect();
    parts.join("; ")
}

/// Checks the size of `raw`, parses it and runs [`check_value`] on the result. `base` is
/// the pointer of the input in the request body (`/input`), prefixed to every pointer.
pub fn parse_input(raw: &[u8], limits: &InputLimits, base: &str) -> Result<Value, InputError> {
    if raw.len() > limits.max_bytes {
        return Err(InputError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let value: Value = serde_json::from_slice(raw).map_err(|e| {
        let message = if e.to_string().starts_with("recursion limit exceeded") {
            format!("nested deeper than {} levels", limits.max_depth)
        } else {
            format!("not valid JSON: {e}")
        };
        InputError::Invalid(vec![Violation {
            pointer: base.to_owned(),
            message,
        }])
    })?;
    check_value(&value, limits, base)?;
    Ok(value)
}

/// Checks an already parsed input: its compact JSON size, its depth, and that no string or
/// property name holds a control character.
pub fn check_value(value: &Value, limits: &InputLimits, base: &str) -> Result<(), InputError> {
    let mut walk = Walk {
        max_depth: limits.max_depth,
        pointer: base.to_owned(),
        violations: Vec::new(),
        left_out: 0,
        too_deep: false,
    };
    walk.value(value, 0);
    // Serialising recurses through the whole value: only once its depth is known bounded
    // (a value built in code has no parser's recursion limit).
    if !walk.too_deep {
        let mut counter = ByteCounter {
            written: 0,
            limit: limits.max_bytes,
        };
        if serde_json::to_writer(&mut counter, value).is_err() {
            return Err(InputError::TooLarge {
                limit: limits.max_bytes,
            });
        }
    }
    walk.finish()
}

/// Counts serialised bytes and fails as soon as they pass the limit.
struct ByteCounter {
    written: usize,
    limit: usize,
}

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        if self.written > self.limit {
            return Err(io::Error::other("over the size limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Walk {
    max_depth: usize,
    /// The pointer of the value being visited; segments are pushed and truncated back.
    pointer: String,
    violations: Vec<Violation>,
    left_out: usize,
    /// Some container passed the depth limit (its inside was not visited).
    too_deep: bool,
}

impl Walk {
    /// Visits `value`, which sits inside `depth` containers.
    fn value(&mut self, value: &Value, depth: usize) {
        match value {
            Value::String(text) => {
                if let Some(message) = control_character(text) {
                    self.violation(self.pointer.clone(), message);
                }
            }
            Value::Array(items) => {
                if !self.enter(depth) {
                    return;
                }
                for (index, item) in items.iter().enumerate() {
                    let end = self.pointer.len();
                    self.pointer.push('/');
                    self.pointer.push_str(&index.to_string());
                    self.value(item, depth + 1);
                    self.pointer.truncate(end);
                }
            }
            Value::Object(fields) => {
                if !self.enter(depth) {
                    return;
                }
                for (key, item) in fields {
                    let end = self.pointer.len();
                    if let Some(message) = control_character(key) {
                        // The key itself is unprintable: point at the object holding it.
                        self.violation(self.pointer.clone(), format!("a property name {message}"));
                        continue;
                    }
                    push_segment(&mut self.pointer, key);
                    self.value(item, depth + 1);
                    self.pointer.truncate(end);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// Whether a container inside `depth` others is within the limit (it is level
    /// `depth + 1`); records the violation when not.
    fn enter(&mut self, depth: usize) -> bool {
        if depth < self.max_depth {
            return true;
        }
        self.too_deep = true;
        let message = format!("nested deeper than {} levels", self.max_depth);
        self.violation(self.pointer.clone(), message);
        false
    }

    fn violation(&mut self, pointer: String, message: String) {
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(Violation { pointer, message });
        } else {
            self.left_out += 1;
        }
    }

    fn finish(mut self) -> Result<(), InputError> {
        if self.violations.is_empty() {
            return Ok(());
        }
        if self.left_out > 0 {
            self.violations.push(Violation {
                pointer: String::new(),
                message: format!("and {} more problems", self.left_out),
            });
        }
        Err(InputError::Invalid(self.violations))
    }
}

/// Appends `/key` to a JSON pointer, escaping `~` and `/` as RFC 6901 says.
fn push_segment(pointer: &mut String, key: &str) {
    pointer.push('/');
    for c in key.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

/// Says which refused control character `text` holds first, and where (in characters).
fn control_character(text: &str) -> Option<String> {
    text.chars()
        .enumerate()
        .find(|&(_, c)| is_refused_control(c))
        .map(|(at, c)| {
            format!(
                "contains the control character U+{:04X} at character {at}",
                c as u32
            )
        })
}

/// C0 controls but tab, LF and CR; DEL; C1 controls.
fn is_refused_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// A module's input schema, compiled once when the module is registered.
#[derive(Debug)]
pub struct InputSchema {
    validator: jsonschema::Validator,
}

/// A module's schema that cannot be used, with the reason (for the operator registering it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid input schema: {0}")]
pub struct SchemaError(pub String);

impl InputSchema {
    /// Compiles `schema` (draft from its `$schema`, 2020-12 when absent) offline, with the
    /// linear-time regex engine. A `$ref` to anything outside the schema fails here.
    pub fn compile(schema: &Value) -> Result<Self, SchemaError> {
        let validator = jsonschema::options()
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .build(schema)
            .map_err(|e| SchemaError(e.to_string()))?;
        Ok(Self { validator })
    }

    /// Checks `input` against the schema; every error names its pointer under `base`.
    pub fn validate(&self, input: &Value, base: &str) -> Result<(), InputError> {
        let mut violations = Vec::new();
        let mut left_out = 0;
        for error in self.validator.iter_errors(input) {
            for violation in describe(&error, base) {
                if violations.len() < MAX_VIOLATIONS {
                    violations.push(violation);
                } else {
                    left_out += 1;
                }
            }
        }
        if violations.is_empty() {
            return Ok(());
        }
        if left_out > 0 {
            violations.push(Violation {
                pointer: String::new(),
                message: format!("and {left_out} more problems"),
            });
        }
        Err(InputError::Invalid(violations))
    }
}

/// The whole chain for one robot: limits, then the schema when the module has one.
pub fn sanitise(
    input: &Value,
    limits: &InputLimits,
    schema: Option<&InputSchema>,
    base: &str,
) -> Result<(), InputError> {
    check_value(input, limits, base)?;
    match schema {
        Some(schema) => schema.validate(input, base),
        None => Ok(()),
    }
}

/// Turns one schema error into violations with short messages; `required` and
/// `additionalProperties` point at the property concerned, not at its object.
fn describe(error: &jsonschema::ValidationError<'_>, base: &str) -> Vec<Violation> {
    use jsonschema::error::ValidationErrorKind as Kind;
    let at = format!("{base}{}", error.instance_path().as_str());
    let one = |message: String| {
        vec![Violation {
            pointer: at.clone(),
            message,
        }]
    };
    let under = |property: &str| {
        let mut pointer = at.clone();
        push_segment(&mut pointer, property);
        pointer
    };
    match error.kind() {
        Kind::Required { property } => vec![Violation {
            pointer: under(property.as_str().unwrap_or_default()),
            message: "is required".into(),
        }],
        Kind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|property| Violation {
                pointer: under(property),
                message: "is not allowed".into(),
            })
            .collect(),
        Kind::Minimum { limit } => one(format!("must be ≥ {limit}")),
        Kind::Maximum { limit } => one(format!("must be ≤ {limit}")),
        Kind::ExclusiveMinimum { limit } => one(format!("must be > {limit}")),
        Kind::ExclusiveMaximum { limit } => one(format!("must be < {limit}")),
        Kind::MinLength { limit } => one(format!("must be at least {limit} characters long")),
        Kind::MaxLength { limit } => one(format!("must be at most {limit} characters long")),
        Kind::MinItems { limit } => one(format!("must have at least {limit} items")),
        Kind::MaxItems { limit } => one(format!("must have at most {limit} items")),
        Kind::Type { kind } => {
            let names: Vec<&str> = match kind {
                jsonschema::error::TypeKind::Single(single) => vec![single.as_str()],
                jsonschema::error::TypeKind::Multiple(set) => {
                    set.iter().map(|t| t.as_str()).collect()
                }
            };
            one(format!("must be of type {}", names.join(" or ")))
        }
        Kind::Enum { options } => one(format!("must be one of {options}")),
        Kind::Constant { expected_value } => one(format!("must be {expected_value}")),
        Kind::Pattern { pattern } => one(format!("must match the pattern {pattern}")),
        Kind::Format { format } => one(format!("must be a valid {format}")),
        _ => one(error.to_string()),
    }
}

#[cfg(test)]
mod tests;
