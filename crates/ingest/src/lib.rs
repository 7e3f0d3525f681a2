//! Ingest: turning request bodies into validated readings, and the worker pool that
//! takes published batches from the bus through the rules into the store.
//!
//! What this crate is not: it does not speak HTTP (that is `vigia-web`) and it does not
//! know how a store or bus backend works (it only sees the traits).

pub mod affinity;
pub mod decode;
pub mod directory;
pub mod metrics;
pub mod pool;
pub mod states;

pub use directory::SensorDirectory;
pub use pool::{Pipeline, PipelineConfig, Provisioning};
pub use states::RuleStates;
