//! HTTP byte ranges (RFC 9110 §14) for `GET /objects/{key}` and resumed downloads: one
//! `Range` header checked against the object's size, and the `Content-Range` answer.

use crate::{ObjectError, ObjectResult};

/// A satisfiable byte range of an object: `start..end`, never empty, `end <= size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    /// Exclusive.
    pub end: u64,
}

impl ByteRange {
    /// Bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Always false: a satisfiable range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The `Content-Range` value of a 206 answer: `bytes 0-99/1000`.
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{size}", self.start, self.end - 1)
    }
}

/// The `Content-Range` value of a 416 answer: `bytes */1000`.
pub fn unsatisfied_content_range(size: u64) -> String {
    format!("bytes */{size}")
}

/// Reads a `Range` header against an object of `size` bytes.
///
/// - `Ok(None)`: serve the whole object (200). RFC 9110 says a server ignores a header it
///   cannot parse, a unit other than `bytes`, and (our choice) a list of several ranges.
/// - `Ok(Some(range))`: serve that part (206), clamped to the object's end as the RFC asks.
/// - `Err(RangeNotSatisfiable)`: answer 416 with [`unsatisfied_content_range`]: the range
///   starts at or past the end, or is a zero-length suffix.
pub fn parse_range(header: &str, size: u64) -> ObjectResult<Option<ByteRange>> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = || Err(ObjectError::RangeNotSatisfiable { size });
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // `bytes=-N`: the last N bytes.
        let Some(suffix) = parse_digits(last) else {
            return Ok(None);
        };
        if suffix == 0 || size == 0 {
            return unsatisfiable();
        }
        return Ok(Some(ByteRange {
            start: size.saturating_sub(suffix),
            end: size,
        }));
    }
    let Some(start) = parse_digits(first) else {
        return Ok(None);
    };
    let end = if last.is_empty() {
        size
    } else {
        match parse_digits(last) {
            Some(last) if last >= start => last.saturating_add(1).min(size),
            // `bytes=5-2` is invalid syntax, which the RFC says to ignore.
            _ => return Ok(None),
        }
    };
    if start >= size {
        return unsatisfiable();
    }
    Ok(Some(ByteRange { start, end }))
}

fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a header reads as: a range `(start, end)`, the whole object (`Ok(None)`), or a
    /// 416 naming the size (`Err(size)`).
    type Reading = Result<Option<(u64, u64)>, u64>;

    fn check(header: &str, size: u64) -> Reading {
        match parse_range(header, size) {
            Ok(range) => Ok(range.map(|r| (r.start, r.end))),
            Err(ObjectError::RangeNotSatisfiable { size }) => Err(size),
            Err(other) => panic!("{header:?}: {other}"),
        }
    }

    #[test]
    fn ranges_as_the_rfc_reads_them() {
        let cases: &[(&str, u64, Reading)] = &[
            ("bytes=0-99", 1000, Ok(Some((0, 100)))),
            ("bytes=100-", 1000, Ok(Some((100, 1000)))),
            ("bytes=-100", 1000, Ok(Some((900, 1000)))),
            ("bytes=-5000", 1000, Ok(Some((0, 1000)))),
            ("bytes=990-5000", 1000, Ok(Some((990, 1000)))),
            ("bytes=999-999", 1000, Ok(Some((999, 1000)))),
            (" bytes= 10 - 19 ", 1000, Ok(Some((10, 20)))),
            ("bytes=1000-", 1000, Err(1000)),
            ("bytes=1000-2000", 1000, Err(1000)),
            ("bytes=-0", 1000, Err(1000)),
            ("bytes=0-", 0, Err(0)),
            ("bytes=-1", 0, Err(0)),
            // Ignored: the whole object is served.
            ("bytes=5-2", 1000, Ok(None)),
            ("bytes=0-1,5-9", 1000, Ok(None)),
            ("items=0-1", 1000, Ok(None)),
            ("bytes=a-b", 1000, Ok(None)),
            ("bytes=+1-2", 1000, Ok(None)),
            ("bytes=-", 1000, Ok(None)),
            ("bytes=12", 1000, Ok(None)),
            ("", 1000, Ok(None)),
            ("bytes=99999999999999999999-", 1000, Ok(None)),
        ];
        for (header, size, expected) in cases {
            assert_eq!(&check(header, *size), expected, "{header:?} of {size}");
        }
    }

    #[test]
    fn content_range_headers() {
        let range = ByteRange { start: 0, end: 100 };
        assert_eq!(range.content_range(1000), "bytes 0-99/1000");
        assert_eq!(range.len(), 100);
        assert_eq!(unsatisfied_content_range(1000), "bytes */1000");
    }

    proptest! {
        /// Whatever the header, a range that comes back lies inside the object and is not
        /// empty, and a 416 names the object's size.
        #[test]
        fn ranges_stay_inside_the_object(a in 0u64..2000, b in 0u64..2000, size in 0u64..1500, form in 0u8..3) {
            let header = match form {
                0 => format!("bytes={a}-{b}"),
                1 => format!("bytes={a}-"),
                _ => format!("bytes=-{a}"),
            };
            match parse_range(&header, size) {
                Ok(Some(r)) => prop_assert!(r.start < r.end && r.end <= size, "{header} {size}: {r:?}"),
                Ok(None) => prop_assert!(form == 0 && b < a, "{header} ignored"),
                Err(ObjectError::RangeNotSatisfiable { size: s }) => prop_assert_eq!(s, size),
                Err(other) => prop_assert!(false, "{}", other),
            }
        }
    }
}
