//! Names of the metrics this crate records, in one place so dashboards, the benchmark
//! and the docs agree on them; `describe` also covers the bus's (`vigia_bus::metrics`).

/// Counter: readings accepted by ingest (answered 202).
pub const INGEST_READINGS: &str = "vigia_ingest_readings_total";
/// Counter: readings newly committed to the store (duplicates excluded).
pub const STORE_READINGS_WRITTEN: &str = "vigia_store_readings_written_total";
/// Histogram: readings per worker batch.
pub const WORKER_BATCH_READINGS: &str = "vigia_worker_batch_readings";
/// Histogram: seconds one store commit of a worker batch took.
pub const STORE_COMMIT_SECONDS: &str = "vigia_store_commit_seconds";
/// Gauge: readings published on the bus and not yet processed.
pub const BUS_DEPTH: &str = "vigia_bus_depth_readings";
/// Counter: alerts opened, by `severity` and `kind`.
pub const ALERTS_OPENED: &str = "vigia_alerts_opened_total";
/// Counter: alerts resolved automatically by the rule engine.
pub const ALERTS_AUTO_RESOLVED: &str = "vigia_alerts_auto_resolved_total";
/// Counter: worker batches that failed and were handed back to the bus.
pub const WORKER_RETRIES: &str = "vigia_worker_retries_total";
/// Counter: ingest batches the store refused for good, put aside as dead letters.
pub const DEAD_LETTERS: &str = "vigia_dead_letters_total";
/// Histogram: seconds from ingest's 202 to the store commit of a batch.
pub const INGEST_TO_COMMIT_SECONDS: &str = "vigia_ingest_to_commit_seconds";
/// Gauge: readings partitions this worker process owns now (`bus_partitions` > 1).
pub const PARTITIONS_OWNED: &str = "vigia_worker_partitions_owned";
/// Counter: readings partitions this worker process took over (at start, on a
/// rebalance, or from a dead owner).
pub const PARTITIONS_TAKEN: &str = "vigia_worker_partitions_taken_total";

/// Registers help texts and starts every counter at zero, so dashboards and the
/// benchmark see each series from the first scrape rather than after its first event.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        PARTITIONS_OWNED,
        "Readings partitions this worker process owns now"
    );
    describe_counter!(
        PARTITIONS_TAKEN,
        "Readings partitions this worker process took over"
    );
    describe_counter!(
        INGEST_READINGS,
        Unit::Count,
        "Readings accepted by ingest (answered 202)."
    );
    describe_counter!(
        STORE_READINGS_WRITTEN,
        Unit::Count,
        "Readings newly committed to the store (duplicates excluded)."
    );
    describe_histogram!(
        WORKER_BATCH_READINGS,
        Unit::Count,
        "Readings per worker batch."
    );
    describe_histogram!(
        STORE_COMMIT_SECONDS,
        Unit::Seconds,
        "Time one store commit of a worker batch took."
    );
    describe_gauge!(
        BUS_DEPTH,
        Unit::Count,
        "Readings on the bus not yet processed."
    );
    describe_counter!(
        ALERTS_OPENED,
        Unit::Count,
        "Alerts opened, by severity and kind."
    );
    describe_counter!(
        ALERTS_AUTO_RESOLVED,
        Unit::Count,
        "Alerts resolved by the rule engine after the hold time."
    );
    describe_counter!(
        WORKER_RETRIES,
        Unit::Count,
        "Worker batches that failed and went back to the bus."
    );
    describe_counter!(
        DEAD_LETTERS,
        Unit::Count,
        "Ingest batches the store refused for good, kept as dead letters (GET /api/v1/dead-letters)."
    );
    describe_histogram!(
        INGEST_TO_COMMIT_SECONDS,
        Unit::Seconds,
        "Time from ingest's 202 to the store commit of a batch."
    );
    describe_histogram!(
        vigia_bus::metrics::BUS_COMMIT_SECONDS,
        Unit::Seconds,
        "Time one group commit of the embedded bus took (inserts, settled acks, fsync)."
    );
    describe_histogram!(
        vigia_bus::metrics::BUS_GROUP_PUBLISHES,
        Unit::Count,
        "Publishes made durable by one group commit of the embedded bus."
    );
    for name in [
        INGEST_READINGS,
        STORE_READINGS_WRITTEN,
        ALERTS_AUTO_RESOLVED,
        WORKER_RETRIES,
        DEAD_LETTERS,
    ] {
        metrics::counter!(name).absolute(0);
    }
    metrics::gauge!(BUS_DEPTH).set(0.0);
}
