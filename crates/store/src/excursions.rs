//! The excursions port: each time a sensor left a rule's limits, as data (when it began
//! and ended, how far it went, how long it lasted, where the sensor fell silent inside
//! it), for reports that must not scan raw readings and for rebuilding duration rules.
//!
//! Excursions are written only through the unit of work ([`crate::Store::write_batch`]),
//! in the same transaction as the readings that open, extend or close them. Each write
//! is an upsert keyed by (sensor, rule, start) carrying absolute values computed by the
//! rule engine, so a redelivered batch writes the same row again instead of counting its
//! time twice; a write older than the stored row (a smaller `last`) changes nothing, so
//! batches that commit out of order never move an excursion back.

use async_trait::async_trait;
use vigia_core::{SensorId, TenantId, Timestamp};

use crate::{StoreError, StoreResult};

/// An excursion as the rule engine last saw it, to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ExcursionUpsert {
    pub tenant: TenantId,
    pub sensor: SensorId,
    /// The rule whose limits were left.
    pub rule: String,
    /// The metric the rule watches.
    pub metric: String,
    /// Event time of the first out-of-range reading.
    pub start: Timestamp,
    /// Event time of the first in-range reading after it; `None` while it goes on.
    pub end: Option<Timestamp>,
    /// Event time of the newest reading counted (the closing one once ended).
    pub last: Timestamp,
    /// The reading farthest past the limits.
    pub peak: f64,
    /// Time out of range, milliseconds (a silence inside counts as out).
    pub out_ms: i64,
    /// Silences inside it, and their total length in milliseconds.
    pub gaps: i64,
    pub gap_ms: i64,
}

/// A stored excursion.
#[derive(Debug, Clone, PartialEq)]
pub struct Excursion {
    pub tenant: TenantId,
    pub sensor: SensorId,
    pub rule: String,
    pub metric: String,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    pub last: Timestamp,
    pub peak: f64,
    pub out_ms: i64,
    pub gaps: i64,
    pub gap_ms: i64,
}

impl From<ExcursionUpsert> for Excursion {
    fn from(u: ExcursionUpsert) -> Self {
        Excursion {
            tenant: u.tenant,
            sensor: u.sensor,
            rule: u.rule,
            metric: u.metric,
            start: u.start,
            end: u.end,
            last: u.last,
            peak: u.peak,
            out_ms: u.out_ms,
            gaps: u.gaps,
            gap_ms: u.gap_ms,
        }
    }
}

/// Which excursions of one sensor to list: those that overlap `[from, to)` (began before
/// `to`, and ended, or were last seen, at or after `from`), oldest first by (start, rule).
#[derive(Debug, Clone, PartialEq)]
pub struct ExcursionQuery {
    pub tenant: TenantId,
    pub sensor: SensorId,
    pub from: Timestamp,
    pub to: Timestamp,
    /// Only excursions after this (start, rule): the next page.
    pub after: Option<(Timestamp, String)>,
    pub limit: usize,
}

/// Reads of stored excursions.
#[async_trait]
pub trait ExcursionRepo: Send + Sync {
    /// The sensor's excursions overlapping the query's range, oldest first.
    async fn list(&self, query: &ExcursionQuery) -> StoreResult<Vec<Excursion>>;
    /// Excursions still going on, across tenants (to restore rule state at start).
    async fn ongoing(&self) -> StoreResult<Vec<Excursion>>;
}

/// Whether an upsert of a stored excursion replaces it: only when it has seen at least
/// as far (see the module doc). Backends whose SQL cannot say it use this.
pub(crate) fn replaces(stored: &Excursion, new: &ExcursionUpsert) -> bool {
    new.last >= stored.last
}

/// Whether a stored excursion is in the query's range.
pub(crate) fn overlaps(e: &Excursion, from: Timestamp, to: Timestamp) -> bool {
    e.start < to && e.end.unwrap_or(e.last) >= from
}

/// Refuses an excursion no backend could store faithfully (every backend checks it the
/// same way before writing anything).
pub(crate) fn check(e: &ExcursionUpsert) -> StoreResult<()> {
    let bad = |why: &str| {
        Err(StoreError::Conflict(format!(
            "excursion of rule `{}` on sensor id {} from {}: {why}",
            e.rule, e.sensor, e.start.0
        )))
    };
    if !e.peak.is_finite() {
        return bad("its peak is not a finite number");
    }
    if e.last < e.start || e.end.is_some_and(|end| end != e.last) {
        return bad("it ends before it starts, or its end is not its last reading");
    }
    if e.out_ms < 0 || e.gaps < 0 || e.gap_ms < 0 {
        return bad("a negative duration or gap count");
    }
    Ok(())
}

/// The refusal of an excursion whose sensor is not the tenant's.
pub(crate) fn not_in_tenant(e: &ExcursionUpsert) -> StoreError {
    StoreError::Conflict(format!(
        "excursion for sensor id {}, which is not a sensor of tenant {}",
        e.sensor, e.tenant
    ))
}
