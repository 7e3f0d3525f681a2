//! Object keys: relative, `/`-separated names checked once at the edge, so no backend ever
//! sees a key that could leave its directory or bucket prefix.

use crate::{ObjectError, ObjectResult};

/// S3's limit on a key, in bytes; the local backend keeps the same so keys move freely.
pub const MAX_KEY_BYTES: usize = 1024;

/// A validated object key such as `offload/2026/12/07/abc.bin`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Checks `key`: not empty, at most [`MAX_KEY_BYTES`], relative (no leading `/`), no
    /// empty, `.` or `..` segment (so no trailing `/` either), no control character, no
    /// backslash (a path separator elsewhere), and no last segment ending in `#` and digits
    /// (the local backend's name for an upload in progress; refused everywhere so that keys
    /// move between backends).
    pub fn new(key: impl Into<String>) -> ObjectResult<Self> {
        let key = key.into();
        match key_problem(&key) {
            None => Ok(Self(key)),
            Some(reason) => Err(ObjectError::InvalidKey { key, reason }),
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as `object_store` addresses it. Validation already refused everything
    /// `Path::parse` refuses, so this cannot fail.
    pub(crate) fn to_path(&self) -> object_store::path::Path {
        object_store::path::Path::parse(&self.0).expect("validated keys are valid paths")
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return Some("it is empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return Some("it is longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return Some("it must be relative (no leading `/`)");
    }
    if key.chars().any(char::is_control) {
        return Some("it contains a control character");
    }
    if key.contains('\\') {
        return Some("it contains `\\`; separate segments with `/`");
    }
    for segment in key.split('/') {
        match segment {
            "" => return Some("it has an empty segment (`//` or a trailing `/`)"),
            "." | ".." => return Some("it has a `.` or `..` segment"),
            _ => {}
        }
    }
    if let Some((_, suffix)) = key
        .rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('#'))
    {
        if !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) {
            return Some("it ends in `#` and digits, which names an upload in progress");
        }
    }
    None
}

/// A listing prefix: empty (everything) or a key whose objects and sub-keys are listed.
pub(crate) fn prefix_path(prefix: &str) -> ObjectResult<Option<object_store::path::Path>> {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    Ok(Some(ObjectKey::new(trimmed)?.to_path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        let long = "a".repeat(MAX_KEY_BYTES + 1);
        let cases: &[(&str, Option<&str>)] = &[
            ("a", None),
            ("offload/2026/12/07/x.bin", None),
            ("with space/ünïcode.csv", None),
            ("dots..in.name", None),
            ("a#b", None),
            ("x/y#2/z", None),
            ("a#", None),
            ("a#1", Some("upload in progress")),
            ("x/y#12", Some("upload in progress")),
            ("", Some("empty")),
            ("/abs", Some("relative")),
            ("a//b", Some("empty segment")),
            ("a/", Some("empty segment")),
            ("../etc/passwd", Some("`..`")),
            ("a/../b", Some("`..`")),
            ("a/./b", Some("`..`")),
            (".", Some("`..`")),
            ("a\nb", Some("control")),
            ("a\u{0}b", Some("control")),
            ("a\\b", Some("`\\`")),
            (&long, Some("1024")),
        ];
        for (key, problem) in cases {
            match (ObjectKey::new(*key), problem) {
                (Ok(k), None) => assert_eq!(k.as_str(), *key),
                (Err(ObjectError::InvalidKey { reason, .. }), Some(part)) => {
                    assert!(reason.contains(part), "{key:?}: {reason}")
                }
                (other, _) => panic!("{key:?}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn the_error_names_the_key() {
        let err = ObjectKey::new("a/../b").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid object key `a/../b`: it has a `.` or `..` segment"
        );
    }

    proptest::proptest! {
        /// Every key we accept is one object_store accepts unchanged (`to_path` relies on
        /// it), and never one that climbs out of its root.
        #[test]
        fn accepted_keys_are_valid_paths(key in r"[a-z./\\\x00-\x1f é%#-]{0,24}") {
            if let Ok(valid) = ObjectKey::new(key.clone()) {
                let parsed = object_store::path::Path::parse(&key);
                proptest::prop_assert!(parsed.is_ok(), "{key:?}: {parsed:?}");
                let path = valid.to_path();
                proptest::prop_assert_eq!(path.as_ref(), key.as_str());
                proptest::prop_assert!(!key.split('/').any(|s| s == ".." || s.is_empty()));
            }
        }
    }

    #[test]
    fn prefixes_allow_empty_and_a_trailing_slash() {
        assert_eq!(prefix_path("").unwrap(), None);
        assert_eq!(prefix_path("/").unwrap(), None);
        assert_eq!(prefix_path("a/b/").unwrap().unwrap().as_ref(), "a/b");
        assert!(prefix_path("../x").is_err());
    }
}
