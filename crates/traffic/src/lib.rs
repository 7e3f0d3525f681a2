//! Clients that generate traffic against a Vigía server over HTTP: the cold-room
//! simulator (`vigia simulate`, and `vigia serve --demo`) and the benchmarks
//! (`vigia bench ingest`, `vigia bench alerts`).
//!
//! Everything here talks to the server the way an outside client would: plain HTTP/1.1
//! on keep-alive connections, the WebSocket live feed, the public API of DESIGN §5, and
//! `/metrics` for what the server reports about itself. Nothing reaches into the
//! server's internals.

#![warn(missing_docs)]

pub mod bench;
pub mod chamber;
pub mod http;
pub mod prometheus;
pub mod simulate;
pub mod units;

#[cfg(test)]
mod test_server;

pub use bench::{bench_ingest, BenchIngestArgs, BenchMode, BenchReport};
pub use chamber::{Chamber, ChamberProfile};
pub use simulate::{seed_000_sensors, simulate, SimulateArgs, SimulateError, SimulateReport};
