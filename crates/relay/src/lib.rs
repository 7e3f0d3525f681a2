//! The relay: datasets on premises reach clients in the cloud without any inbound port on
//! the premises (seed 003: Enrutador, Conector, App CLI).
//!
//! - [`connector`]: runs beside the data; keeps ONE outbound control channel to the router
//!   and serves the regular files under its root ([`safe_path`] refuses every way out).
//! - [`router`]: holds the channels of live connectors per (tenant, id) and runs transfers
//!   between them and clients in three modes — buffering, streaming, offloading to object
//!   storage ([`vigia_objects`]) — each verified by SHA-256 end to end and resumable.
//! - [`protocol`]: the versioned JSON control messages and the HTTP paths of the data
//!   requests. Data never travels on the control channel: each transfer is its own HTTP
//!   request, so TCP gives backpressure per transfer and nothing blocks behind a large one.
//!
//! This crate is a library: the web layer mounts [`router::Relay`] behind its routes, the
//! `vigia connector` subcommand calls [`connector::run`].
//!
//! Decisions where the issue is silent:
//! - `complete` carries `{size, sha256, sent_sha256}`: `sha256` is the whole file's (what
//!   the client verifies, also after a resume), `sent_sha256` the bytes actually sent
//!   (what the router checks against what it carried); they are equal from offset 0.
//! - Offloads upload the original bytes (no zstd, no offset) so a cut download resumes by
//!   `Range`; above S3's 5 GiB single-PUT limit they are refused (413, stream instead).
//!   The router checks the object's size; it never reads the object back, so the SHA-256
//!   is the connector's, verified by the client on download.
//! - Timeouts are idle timeouts (`request_timeout` without progress), not limits on a
//!   whole transfer; an offload's is its URL's validity, since its bytes bypass the router.
//! - A transfer lives on the control channel it started on: when that channel ends, the
//!   transfer fails for its client at once (who resumes) and the connector abandons it.
//! - `buffer_memory_bytes` is shared by all buffered transfers of a router, so memory is
//!   bounded however many run at once.
//! - One router process holds its own channels; forwarding between relay processes through
//!   the store is later work, as are the store tables behind [`router::ConnectorDirectory`].
//! - The connector speaks plain `http://` only: the workspace's reqwest has no TLS.

pub mod connector;
mod error;
pub mod protocol;
pub mod router;
pub mod safe_path;

pub use error::RelayError;
pub use router::{Relay, RelayConfig};
