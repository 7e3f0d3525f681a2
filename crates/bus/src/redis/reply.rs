//! Reading Redis's replies: stream entries (`XREADGROUP`, `XAUTOCLAIM`, `XRANGE`) into
//! the bus's fields, and dead letters. RESP2 arrays and RESP3 maps alike.

use ::redis::Value;
use bytes::Bytes;

use crate::volatile::DeadLetter;
use crate::Topic;

/// One entry of a stream as Redis returned it.
pub(crate) struct RawEntry {
    pub id: String,
    /// `None` when the entry is gone (deleted while still pending).
    pub fields: Option<Fields>,
}

pub(crate) struct Fields {
    pub payload: Bytes,
    pub weight: u32,
    pub handed_back: bool,
}

/// A stream id (`MS-SEQ`), ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct StreamId(u64, u64);

impl StreamId {
    pub const ZERO: StreamId = StreamId(0, 0);

    pub fn parse(id: &str) -> Option<StreamId> {
        let (ms, seq) = id.split_once('-')?;
        Some(StreamId(ms.parse().ok()?, seq.parse().ok()?))
    }
}

pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

/// The entries of an `XREADGROUP` reply (one stream).
pub(crate) fn read_reply(value: Value) -> Vec<RawEntry> {
    match value {
        Value::Array(streams) => streams
            .into_iter()
            .flat_map(|stream| match stream {
                Value::Array(mut key_entries) if key_entries.len() == 2 => {
                    entries_of(key_entries.pop().expect("two elements"))
                }
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(pairs) => pairs.into_iter().flat_map(|(_, e)| entries_of(e)).collect(),
        _ => Vec::new(),
    }
}

/// A list of `[id, [field, value, …]]` entries (`XRANGE`, `XAUTOCLAIM`, one stream of
/// `XREADGROUP`), each with its flat field list (`None` for an entry that is gone).
pub(crate) fn flat_entries(value: Value) -> Vec<(String, Option<Vec<Value>>)> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut parts) = item else {
                return None;
            };
            if parts.is_empty() {
                return None;
            }
            let fields = match parts.len() {
                1 => Value::Nil,
                _ => parts.swap_remove(1),
            };
            let id = text(&parts[0])?;
            let flat = match fields {
                Value::Array(flat) => Some(flat),
                Value::Map(pairs) => Some(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()),
                _ => None,
            };
            Some((id, flat))
        })
        .collect()
}

/// [`flat_entries`] of a topic's stream.
pub(crate) fn entries_of(value: Value) -> Vec<RawEntry> {
    flat_entries(value)
        .into_iter()
        .map(|(id, flat)| RawEntry {
            id,
            fields: flat.map(Fields::from_flat),
        })
        .collect()
}

/// Field-value pairs of a flat list, keys as text.
fn pairs(flat: Vec<Value>) -> impl Iterator<Item = (String, Value)> {
    let mut items = flat.into_iter();
    std::iter::from_fn(move || loop {
        let key = items.next()?;
        let value = items.next()?;
        if let Some(key) = text(&key) {
            return Some((key, value));
        }
    })
}

fn bytes_of(value: Value) -> Bytes {
    match value {
        Value::BulkString(bytes) => Bytes::from(bytes),
        Value::SimpleString(s) => Bytes::from(s),
        _ => Bytes::new(),
    }
}

impl Fields {
    pub fn from_flat(flat: Vec<Value>) -> Fields {
        let mut fields = Fields {
            payload: Bytes::new(),
            weight: 0,
            handed_back: false,
        };
        for (key, value) in pairs(flat) {
            match key.as_str() {
                "p" => fields.payload = bytes_of(value),
                "w" => fields.weight = text(&value).and_then(|w| w.parse().ok()).unwrap_or(0),
                "r" => fields.handed_back = text(&value).is_some_and(|r| r != "0"),
                _ => {}
            }
        }
        fields
    }
}

/// A dead-letter stream entry (`topic`, `id`, `p`, `w`, `reason`).
pub(crate) fn dead_letter(flat: Vec<Value>) -> Option<DeadLetter> {
    let (mut topic, mut payload, mut reason) = (None, Bytes::new(), String::new());
    for (key, value) in pairs(flat) {
        match key.as_str() {
            "topic" => topic = text(&value).and_then(|t| Topic::from_name(&t)),
            "p" => payload = bytes_of(value),
            "reason" => reason = text(&value).unwrap_or_default(),
            _ => {}
        }
    }
    Some(DeadLetter {
        topic: topic?,
        payload,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_numerically() {
        let id = |s| StreamId::parse(s).unwrap();
        assert!(id("10-0") > id("9-5"));
        assert!(id("9-10") > id("9-9"));
        assert_eq!(StreamId::parse("x"), None);
        assert_eq!(StreamId::parse("1-"), None);
    }

    #[test]
    fn replies_parse_including_gone_entries() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = |id: &str, fields: Value| Value::Array(vec![bulk(id), fields]);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("{p:readings}:stream"),
            Value::Array(vec![
                entry(
                    "1-0",
                    Value::Array(vec![bulk("p"), bulk("ab\u{1}"), bulk("w"), bulk("7")]),
                ),
                entry("2-0", Value::Nil),
                entry(
                    "3-0",
                    Value::Array(vec![
                        bulk("p"),
                        bulk(""),
                        bulk("w"),
                        bulk("0"),
                        bulk("r"),
                        bulk("2"),
                    ]),
                ),
            ]),
        ])]);
        let entries = read_reply(reply);
        assert_eq!(entries.len(), 3);
        let first = entries[0].fields.as_ref().unwrap();
        assert_eq!(
            (&first.payload[..], first.weight, first.handed_back),
            (&b"ab\x01"[..], 7, false)
        );
        assert!(entries[1].fields.is_none());
        assert!(entries[2].fields.as_ref().unwrap().handed_back);
        assert!(read_reply(Value::Nil).is_empty());
    }
}
