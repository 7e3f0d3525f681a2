//! The `vigia` binary's library half: configuration, `serve`, `keys` and the demo wiring, kept
//! out of `main.rs` so integration tests can reach them.

pub mod config;
pub mod demo;
pub mod jobs;
pub mod keys;
pub mod roles;
pub mod serve;
