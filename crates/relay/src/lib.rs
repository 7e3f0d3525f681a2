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

pub mod connector;
mod error;
pub mod protocol;
pub mod router;
pub mod safe_path;

pub use error::RelayError;
pub use router::{Relay, RelayConfig};
