//! The control protocol between a connector and the router: small, versioned JSON messages
//! on one outbound channel, and the HTTP paths and headers of the data requests.
//!
//! Every message is one JSON object `{"v":1,"type":"…",…}` in one text frame. The framing
//! is the transport's (a WebSocket text message today; one SSE `data:` event down and one
//! `POST` body up carry the very same text), so nothing here knows the transport. Data
//! never travels on this channel: each transfer is its own HTTP request ([`paths`]).
//!
//! Decoding is strict: a message over [`MAX_MESSAGE_BYTES`], of another protocol version,
//! of an unknown type, missing a field or holding a bad value is a [`ProtocolError`] naming
//! the field, and the receiver closes the channel with that reason.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks; a message with another `v` is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest control message accepted, in bytes. A dataset listing is the largest message;
/// [`MAX_LISTED_DATASETS`] keeps it under this.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Most datasets one listing names (the answer says `truncated` past it).
pub const MAX_LISTED_DATASETS: usize = 2_000;

/// Longest dataset name, in bytes.
pub const MAX_DATASET_NAME_BYTES: usize = 1024;

/// Longest connector id (a MAC address or a node name), in bytes.
pub const MAX_CONNECTOR_ID_BYTES: usize = 128;

/// How often a connector sends a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

/// Silence after which the router marks a connector offline and drops its channel (three
/// missed heartbeats); the connector applies the same limit to the router's answers.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(45);

/// Header naming the connector on its data requests (with `Authorization: Bearer TOKEN`).
pub const CONNECTOR_HEADER: &str = "x-vigia-connector";

/// A transfer's id: 32 lowercase hex digits (128 random bits), unguessable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TransferId(String);

impl TryFrom<String> for TransferId {
    type Error = ProtocolError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<TransferId> for String {
    fn from(id: TransferId) -> String {
        id.0
    }
}

impl TransferId {
    /// A new random id.
    pub fn random() -> Self {
        let bits: u128 = rand::random();
        Self(format!("{bits:032x}"))
    }

    /// Parses an id from a URL path segment or a message.
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        if text.len() == 32
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(text.to_owned()))
        } else {
            Err(ProtocolError::field(
                "transfer",
                "a transfer id is 32 lowercase hex digits",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TransferId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a transfer's bytes reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The router receives the whole dataset, then answers (seed pattern A).
    Buffer,
    /// Bytes flow connector → router → client as they come (pattern B).
    Stream,
    /// The connector uploads to object storage; the client downloads from there (pattern C).
    Offload,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Buffer => "buffer",
            Mode::Stream => "stream",
            Mode::Offload => "offload",
        }
    }
}

/// One dataset a connector serves: a regular file under its root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// The path under the root, `/`-separated.
    pub name: String,
    pub size: u64,
    /// Last modification, Unix milliseconds.
    pub mtime_ms: i64,
    /// The SHA-256 (hex) when the connector has it cached for this size and mtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Where an offloading connector uploads: a presigned PUT, so it holds no storage
/// credentials. The body must be exactly `content_length` bytes (the length is signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadTarget {
    pub url: String,
    pub content_length: u64,
    /// Unix seconds after which the URL no longer works.
    pub expires_at: u64,
}

/// The router asks the connector for a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    pub transfer: TransferId,
    pub dataset: String,
    pub mode: Mode,
    /// First byte to send (resume); only streams start past 0.
    #[serde(default)]
    pub offset: u64,
    /// Whether the body goes zstd-compressed (buffer and stream only; the SHA-256 is over
    /// the original bytes).
    #[serde(default)]
    pub zstd: bool,
    /// Present exactly for [`Mode::Offload`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadTarget>,
}

/// Why a request or transfer could not be served, as the connector reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No regular file by that name under the root.
    DatasetMissing,
    /// The name tries to leave the root (`..`, absolute, encoded, symlink outside).
    Traversal,
    /// The offset lies past the end of the file.
    BadOffset,
    /// The file changed while being read, or could not be read.
    Io,
    /// The connector serves too many transfers already.
    Busy,
    /// The message could not be understood.
    Malformed,
}

/// A control message. Which side may send which is checked by the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Connector → router, first message: who it is.
    Hello {
        connector: String,
        token: String,
        /// The connector's build, for logs.
        #[serde(default)]
        agent: String,
    },
    /// Router → connector: authenticated; heartbeat every `heartbeat_secs`.
    Welcome { heartbeat_secs: u64 },
    /// Connector → router every [`HEARTBEAT_INTERVAL`]; the router echoes it, so each side
    /// notices the other's silence.
    Heartbeat,
    /// Router → connector: list the datasets.
    ListDatasets { request: u64 },
    /// Connector → router: the answer to `ListDatasets`.
    Datasets {
        request: u64,
        datasets: Vec<DatasetInfo>,
        /// More datasets exist than [`MAX_LISTED_DATASETS`].
        #[serde(default)]
        truncated: bool,
    },
    /// Router → connector: describe one dataset (before a transfer, so a missing or
    /// refused name is answered before any byte moves, and an offload's PUT can be signed
    /// for its length).
    Stat { request: u64, dataset: String },
    /// Connector → router: the answer to `Stat`.
    DatasetStat { request: u64, dataset: DatasetInfo },
    /// Router → connector: send a dataset.
    Transfer(TransferRequest),
    /// Either way: stop a transfer (the client went away, or the connector gave up).
    Cancel {
        transfer: TransferId,
        reason: String,
    },
    /// Either way: a request (`request`) or a transfer (`transfer`) failed.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transfer: Option<TransferId>,
        code: ErrorCode,
        message: String,
    },
    /// Router → connector, last message: the channel closes; do not reconnect before
    /// `retry_after_secs` when given.
    Close {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_secs: Option<u64>,
    },
}

impl Message {
    /// The message's `type`, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Welcome { .. } => "welcome",
            Message::Heartbeat => "heartbeat",
            Message::ListDatasets { .. } => "list_datasets",
            Message::Datasets { .. } => "datasets",
            Message::Stat { .. } => "stat",
            Message::DatasetStat { .. } => "dataset_stat",
            Message::Transfer(_) => "transfer",
            Message::Cancel { .. } => "cancel",
            Message::Error { .. } => "error",
            Message::Close { .. } => "close",
        }
    }
}

/// A control message that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("control message of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("protocol version {found} is not supported (this side speaks {PROTOCOL_VERSION})")]
    Version { found: u64 },
    #[error("malformed control message: {0}")]
    Json(String),
    #[error("control message field `{field}`: {message}")]
    Field {
        field: &'static str,
        message: &'static str,
    },
    #[error("a {sender} may not send `{kind}`")]
    Direction {
        sender: &'static str,
        kind: &'static str,
    },
}

impl ProtocolError {
    fn field(field: &'static str, message: &'static str) -> Self {
        Self::Field { field, message }
    }
}

#[derive(Serialize)]
struct Outgoing<'a> {
    v: u32,
    #[serde(flatten)]
    message: &'a Message,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(flatten)]
    message: Message,
}

/// The text frame of `message`.
pub fn encode(message: &Message) -> String {
    serde_json::to_string(&Outgoing {
        v: PROTOCOL_VERSION,
        message,
    })
    .expect("control messages serialise: plain strings and numbers")
}

/// Parses and checks one text frame.
pub fn decode(text: &str) -> Result<Message, ProtocolError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge {
            size: text.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    // The version first, so a newer peer's unknown message type reads as a version error.
    let version: VersionOnly =
        serde_json::from_str(text).map_err(|err| ProtocolError::Json(err.to_string()))?;
    match version.v {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => {}
        Some(serde_json::Value::Number(n)) => {
            return Err(ProtocolError::Version {
                found: n.as_u64().unwrap_or(0),
            })
        }
        Some(_) => return Err(ProtocolError::field("v", "must be a number")),
        None => return Err(ProtocolError::field("v", "is missing")),
    }
    let incoming: Incoming =
        serde_json::from_str(text).map_err(|err| ProtocolError::Json(err.to_string()))?;
    check(&incoming.message)?;
    Ok(incoming.message)
}

/// Value checks serde cannot express.
fn check(message: &Message) -> Result<(), ProtocolError> {
    match message {
        Message::Hello { connector, .. } => check_connector_id(connector),
        Message::Stat { dataset, .. } => check_dataset_name(dataset),
        Message::Datasets { datasets, .. } if datasets.len() > MAX_LISTED_DATASETS => Err(
            ProtocolError::field("datasets", "names more datasets than allowed"),
        ),
        Message::Datasets { datasets, .. } => datasets.iter().try_for_each(check_info),
        Message::DatasetStat { dataset, .. } => check_info(dataset),
        Message::Transfer(request) => {
            check_dataset_name(&request.dataset)?;
            match (request.mode, &request.upload) {
                (Mode::Offload, None) => Err(ProtocolError::field(
                    "upload",
                    "an offload transfer needs an upload target",
                )),
                (Mode::Buffer | Mode::Stream, Some(_)) => Err(ProtocolError::field(
                    "upload",
                    "only an offload transfer has an upload target",
                )),
                (Mode::Offload, Some(_)) if request.zstd || request.offset != 0 => {
                    Err(ProtocolError::field(
                        "zstd",
                        "an offload uploads the whole original file (no zstd, no offset)",
                    ))
                }
                (Mode::Buffer, None) if request.offset != 0 => Err(ProtocolError::field(
                    "offset",
                    "only a stream resumes from an offset",
                )),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

fn check_info(info: &DatasetInfo) -> Result<(), ProtocolError> {
    check_dataset_name(&info.name)?;
    match &info.sha256 {
        Some(hash) if !is_sha256_hex(hash) => Err(ProtocolError::field(
            "sha256",
            "must be 64 lowercase hex digits",
        )),
        _ => Ok(()),
    }
}

/// Checks a connector id: 1 to [`MAX_CONNECTOR_ID_BYTES`] of letters, digits, `-`, `_`,
/// `.` and `:` (a MAC address `cc:28:aa:…` or `cc-28-aa-…`, or a node name).
pub fn check_connector_id(id: &str) -> Result<(), ProtocolError> {
    if id.is_empty() || id.len() > MAX_CONNECTOR_ID_BYTES {
        return Err(ProtocolError::field(
            "connector",
            "must be 1 to 128 bytes long",
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(ProtocolError::field(
            "connector",
            "may hold only letters, digits, `-`, `_`, `.` and `:`",
        ));
    }
    Ok(())
}

fn check_dataset_name(name: &str) -> Result<(), ProtocolError> {
    if name.is_empty() || name.len() > MAX_DATASET_NAME_BYTES {
        return Err(ProtocolError::field(
            "dataset",
            "must be 1 to 1024 bytes long",
        ));
    }
    Ok(())
}

/// Whether `text` is a SHA-256 in lowercase hex.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the connector reports when it has sent a transfer's last byte
/// (`POST /api/v1/transfers/{id}/complete`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteReport {
    /// The whole file's size.
    pub size: u64,
    /// SHA-256 of the whole file (hex), what the client verifies.
    pub sha256: String,
    /// SHA-256 of the bytes sent (from the offset to the end, before compression), what
    /// the router verifies against what it carried. Equal to `sha256` from offset 0.
    pub sent_sha256: String,
}

impl CompleteReport {
    /// Checks the report's fields.
    pub fn check(&self) -> Result<(), ProtocolError> {
        if !is_sha256_hex(&self.sha256) {
            return Err(ProtocolError::field(
                "sha256",
                "must be 64 lowercase hex digits",
            ));
        }
        if !is_sha256_hex(&self.sent_sha256) {
            return Err(ProtocolError::field(
                "sent_sha256",
                "must be 64 lowercase hex digits",
            ));
        }
        Ok(())
    }
}

/// What the connector reports when it gives up a transfer (`POST …/fail`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailReport {
    pub code: ErrorCode,
    pub message: String,
}

/// The HTTP paths of the relay, relative to the router's base URL.
pub mod paths {
    use super::TransferId;

    /// The control channel (WebSocket upgrade).
    pub const CHANNEL: &str = "/api/v1/connectors/channel";

    /// `POST` of a buffered transfer's whole body.
    pub fn result(id: &TransferId) -> String {
        format!("/api/v1/transfers/{id}/result")
    }

    /// `POST` of a streamed transfer's body from `offset`.
    pub fn stream(id: &TransferId, offset: u64) -> String {
        format!("/api/v1/transfers/{id}/stream?offset={offset}")
    }

    /// `POST` of the [`super::CompleteReport`].
    pub fn complete(id: &TransferId) -> String {
        format!("/api/v1/transfers/{id}/complete")
    }

    /// `POST` of the [`super::FailReport`].
    pub fn fail(id: &TransferId) -> String {
        format!("/api/v1/transfers/{id}/fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(mode: Mode) -> TransferRequest {
        TransferRequest {
            transfer: TransferId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            dataset: "a.csv".into(),
            mode,
            offset: 0,
            zstd: false,
            upload: None,
        }
    }

    #[test]
    fn every_message_round_trips() {
        let id = TransferId::random();
        let info = DatasetInfo {
            name: "d/a.csv".into(),
            size: 10,
            mtime_ms: 1_700_000_000_000,
            sha256: Some("a".repeat(64)),
        };
        let messages = vec![
            Message::Hello {
                connector: "cc:28:aa:01:02:03".into(),
                token: "vg_x".into(),
                agent: "vigia 0.1".into(),
            },
            Message::Welcome { heartbeat_secs: 15 },
            Message::Heartbeat,
            Message::ListDatasets { request: 1 },
            Message::Datasets {
                request: 1,
                datasets: vec![info.clone()],
                truncated: false,
            },
            Message::Stat {
                request: 2,
                dataset: "a.csv".into(),
            },
            Message::DatasetStat {
                request: 2,
                dataset: info,
            },
            Message::Transfer(TransferRequest {
                offset: 5,
                zstd: true,
                ..transfer(Mode::Stream)
            }),
            Message::Transfer(TransferRequest {
                upload: Some(UploadTarget {
                    url: "http://x/objects/k?sig=1".into(),
                    content_length: 10,
                    expires_at: 1,
                }),
                ..transfer(Mode::Offload)
            }),
            Message::Cancel {
                transfer: id.clone(),
                reason: "client gone".into(),
            },
            Message::Error {
                request: None,
                transfer: Some(id),
                code: ErrorCode::DatasetMissing,
                message: "no".into(),
            },
            Message::Close {
                reason: "restart".into(),
                retry_after_secs: Some(5),
            },
        ];
        for message in messages {
            let text = encode(&message);
            assert!(text.starts_with("{\"v\":1,\"type\":"), "{text}");
            assert_eq!(decode(&text).unwrap(), message, "{text}");
        }
        assert_eq!(encode(&Message::Heartbeat), r#"{"v":1,"type":"heartbeat"}"#);
    }

    #[test]
    fn malformed_messages_are_refused_naming_why() {
        let big = format!(
            r#"{{"v":1,"type":"hello","connector":"a","token":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "malformed control message"),
            ("[]".into(), "malformed control message"),
            (r#"{"type":"heartbeat"}"#.into(), "field `v`: is missing"),
            (r#"{"v":"1","type":"heartbeat"}"#.into(), "field `v`: must be a number"),
            (r#"{"v":2,"type":"warp"}"#.into(), "protocol version 2 is not supported"),
            (r#"{"v":1,"type":"warp"}"#.into(), "unknown variant `warp`"),
            (r#"{"v":1}"#.into(), "missing field `type`"),
            (r#"{"v":1,"type":"stat","request":1}"#.into(), "missing field `dataset`"),
            (r#"{"v":1,"type":"stat","request":-1,"dataset":"a"}"#.into(), "invalid value"),
            (r#"{"v":1,"type":"stat","request":1,"dataset":""}"#.into(), "field `dataset`"),
            (r#"{"v":1,"type":"hello","connector":"a b","token":"t"}"#.into(), "field `connector`"),
            (r#"{"v":1,"type":"hello","connector":"","token":"t"}"#.into(), "field `connector`"),
            (
                r#"{"v":1,"type":"transfer","transfer":"xyz","dataset":"a","mode":"buffer"}"#.into(),
                "32 lowercase hex",
            ),
            (
                r#"{"v":1,"type":"transfer","transfer":"0123456789abcdef0123456789abcdef","dataset":"a","mode":"offload"}"#.into(),
                "field `upload`",
            ),
            (
                r#"{"v":1,"type":"transfer","transfer":"0123456789abcdef0123456789abcdef","dataset":"a","mode":"buffer","offset":3}"#.into(),
                "field `offset`",
            ),
            (
                r#"{"v":1,"type":"transfer","transfer":"0123456789abcdef0123456789abcdef","dataset":"a","mode":"sideways"}"#.into(),
                "unknown variant `sideways`",
            ),
            (
                r#"{"v":1,"type":"dataset_stat","request":1,"dataset":{"name":"a","size":1,"mtime_ms":0,"sha256":"XYZ"}}"#.into(),
                "field `sha256`",
            ),
            (big, "exceeds the limit"),
        ];
        for (text, expected) in cases {
            let err = decode(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:.80} → {err}");
        }
    }

    #[test]
    fn transfer_ids_are_random_hex() {
        let a = TransferId::random();
        let b = TransferId::random();
        assert_ne!(a, b);
        assert_eq!(TransferId::parse(a.as_str()).unwrap(), a);
        for bad in [
            "",
            "ABCDEF0123456789abcdef0123456789",
            "../x",
            &"a".repeat(33),
        ] {
            assert!(TransferId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn complete_reports_are_checked() {
        let good = CompleteReport {
            size: 1,
            sha256: "0".repeat(64),
            sent_sha256: "f".repeat(64),
        };
        good.check().unwrap();
        let bad = CompleteReport {
            sha256: "0".repeat(63),
            ..good.clone()
        };
        assert!(bad.check().unwrap_err().to_string().contains("`sha256`"));
        let bad = CompleteReport {
            sent_sha256: "G".repeat(64),
            ..good
        };
        assert!(bad
            .check()
            .unwrap_err()
            .to_string()
            .contains("`sent_sha256`"));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever arrives, decoding answers (a message or an error), never panics.
            #[test]
            fn decoding_never_panics(text in ".{0,400}") {
                let _ = decode(&text);
            }

            /// Near-valid frames: a real message with one byte changed.
            #[test]
            fn decoding_mangled_messages_never_panics(at in 0usize..200, byte in any::<u8>()) {
                let text = encode(&Message::Stat { request: 7, dataset: "dir/a.csv".into() });
                let mut bytes = text.into_bytes();
                let at = at % bytes.len();
                bytes[at] = byte;
                if let Ok(text) = String::from_utf8(bytes) {
                    let _ = decode(&text);
                }
            }

            /// Every stat, cancel and error with any text round-trips.
            #[test]
            fn messages_round_trip(request in any::<u64>(), dataset in "[^\\x00]{1,100}", reason in ".{0,100}") {
                let messages = [
                    Message::Stat { request, dataset: dataset.clone() },
                    Message::Cancel { transfer: TransferId::random(), reason: reason.clone() },
                    Message::Error { request: Some(request), transfer: None, code: ErrorCode::Io, message: reason },
                ];
                for message in messages {
                    prop_assert_eq!(decode(&encode(&message)).unwrap(), message);
                }
            }
        }
    }
}
