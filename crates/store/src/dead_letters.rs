//! The dead-letter port: ingest batches the store refused for good, kept with the
//! reason instead of being retried forever.
//!
//! A worker hands a batch back to the bus when a commit fails for a reason that may pass
//! (the store is down, locked, full); it puts the batch here only when the store refused
//! it outright (a constraint, a value the backend cannot hold, a bug), and only after the
//! batch failed alone, apart from the batches it was delivered with. The readings are
//! kept whole (JSON), so an operator can read what was refused and replay it once the
//! cause is fixed.

use async_trait::async_trait;
use vigia_core::{Reading, TenantId, Timestamp};

use crate::{StoreError, StoreResult};

/// Most readings a dead letter lists in its summary's `sensors` (the first distinct keys).
pub const SUMMARY_SENSORS: usize = 10;

/// A batch to put aside.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    pub tenant: TenantId,
    /// Why the store refused it: the store's own message.
    pub reason: String,
    /// When ingest accepted the batch (the 202).
    pub received_at: Timestamp,
    /// The readings as ingest accepted them.
    pub readings: Vec<Reading>,
}

/// A stored dead letter without its readings (for lists).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetterSummary {
    /// Increasing, never reused: the list's order (newest first) and cursor.
    pub id: u64,
    pub reason: String,
    #[schema(value_type = String, format = DateTime)]
    pub received_at: Timestamp,
    /// When the worker gave up on it.
    #[schema(value_type = String, format = DateTime)]
    pub dead_at: Timestamp,
    /// How many readings it holds.
    pub readings: u64,
    /// The first distinct sensor keys among them (at most 10), to tell letters apart.
    pub sensors: Vec<String>,
}

/// A stored dead letter with its readings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    #[serde(flatten)]
    pub summary: DeadLetterSummary,
    /// The readings, as ingest accepted them.
    #[serde(rename = "batch")]
    pub readings: Vec<Reading>,
}

/// The first distinct sensor keys of `readings` (at most [`SUMMARY_SENSORS`]).
pub(crate) fn summary_sensors(readings: &[Reading]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for reading in readings {
        if keys.len() == SUMMARY_SENSORS {
            break;
        }
        if !keys.contains(&reading.sensor) {
            keys.push(reading.sensor.clone());
        }
    }
    keys
}

/// A dead letter's columns as the SQL backends store them: the sensor keys and the
/// readings as JSON text, readable with the database's own tools.
pub(crate) struct EncodedLetter {
    pub readings: i64,
    pub sensors: String,
    pub batch: String,
}

impl EncodedLetter {
    pub(crate) fn new(letter: &NewDeadLetter) -> StoreResult<Self> {
        let encode = |e: serde_json::Error| {
            StoreError::Internal(format!("cannot encode a dead letter: {e}"))
        };
        Ok(Self {
            readings: i64::try_from(letter.readings.len()).unwrap_or(i64::MAX),
            sensors: serde_json::to_string(&summary_sensors(&letter.readings)).map_err(encode)?,
            batch: serde_json::to_string(&letter.readings).map_err(encode)?,
        })
    }
}

/// The summary columns as the SQL backends select them:
/// `id, reason, received_at, dead_at, readings, sensors`.
pub(crate) const SUMMARY_COLUMNS: &str = "id, reason, received_at, dead_at, readings, sensors";

/// A row of [`SUMMARY_COLUMNS`].
pub(crate) type SummaryRow = (i64, String, i64, i64, i64, String);

/// Decodes a row of [`SUMMARY_COLUMNS`].
pub(crate) fn summary_from_row(
    (id, reason, received_at, dead_at, readings, sensors): SummaryRow,
) -> StoreResult<DeadLetterSummary> {
    let id = id.max(0) as u64;
    Ok(DeadLetterSummary {
        id,
        reason,
        received_at: Timestamp(received_at),
        dead_at: Timestamp(dead_at),
        readings: readings.max(0) as u64,
        sensors: serde_json::from_str(&sensors).map_err(|e| unreadable(id, e))?,
    })
}

/// Decodes a row of [`SUMMARY_COLUMNS`] followed by `batch`.
pub(crate) fn letter_from_row(row: SummaryRow, batch: &str) -> StoreResult<DeadLetter> {
    let summary = summary_from_row(row)?;
    let readings = serde_json::from_str(batch).map_err(|e| unreadable(summary.id, e))?;
    Ok(DeadLetter { summary, readings })
}

fn unreadable(id: u64, e: serde_json::Error) -> StoreError {
    StoreError::Internal(format!("dead letter {id} cannot be read: {e}"))
}

/// An id as the SQL backends hold it; ids past `i64::MAX` cannot exist.
pub(crate) fn sql_id(id: u64) -> StoreResult<i64> {
    i64::try_from(id).map_err(|_| StoreError::NotFound)
}

/// Dead letters, per tenant.
#[async_trait]
pub trait DeadLetterRepo: Send + Sync {
    /// Stores a dead letter at `at`; returns its id.
    async fn put(&self, letter: NewDeadLetter, at: Timestamp) -> StoreResult<u64>;
    /// A tenant's dead letters, newest first: up to `limit` with an id below `before`
    /// (all when `None`).
    async fn list(
        &self,
        tenant: TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<DeadLetterSummary>>;
    /// One of the tenant's dead letters, with its readings; `NotFound` when it is not the
    /// tenant's or does not exist.
    async fn get(&self, tenant: TenantId, id: u64) -> StoreResult<DeadLetter>;
    /// Deletes one of the tenant's dead letters (after a replay, or by hand); `NotFound`
    /// as [`DeadLetterRepo::get`].
    async fn delete(&self, tenant: TenantId, id: u64) -> StoreResult<()>;
}
