//! The `vigia` binary's library half: configuration, `serve` (and its `--check`), `keys`, `probe` and the demo wiring, kept
//! out of `main.rs` so integration tests can reach them.

pub mod check;
pub mod config;
pub mod demo;
pub mod jobs;
pub mod keys;
pub mod prices;
pub mod probe;
pub mod robots;
pub mod roles;
pub mod serve;
