//! Names of the metrics the embedded bus records (described with the others by
//! `vigia_ingest::metrics::describe`). Its group commit is where a 202 waits, so these
//! are the first place to look when ingest latency grows.

/// Histogram: seconds one group commit of the embedded bus took (the group's inserts,
/// the acks settled with it, and the fsync).
pub const BUS_COMMIT_SECONDS: &str = "vigia_bus_commit_seconds";
/// Histogram: publishes made durable by one group commit.
pub const BUS_GROUP_PUBLISHES: &str = "vigia_bus_group_publishes";
