//! The readings' own jobs (issue 14): `rollups` summarises closed raw minutes into the
//! 1-minute and 1-hour rollups, `readings-retention` deletes raw readings and rollups past
//! their retention. Both work in bounded steps (one store statement each) and check for
//! cancellation between steps, so a backlog never holds a lock for long and shutdown
//! never waits on them.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use vigia_core::{TenantId, Timestamp};
use vigia_scheduler::{JobContext, JobError, JobReport};
use vigia_store::{Resolution, RetentionScope, Store};

use super::ago;
use crate::config::Config;

/// The end of the raw range both resolutions have summarised, as the `rollups` job last
/// saw it (`i64::MIN`: not yet known in this process). Raw readings at or after it are
/// never deleted: they may still be needed to build their rollups.
#[derive(Debug)]
pub struct RolledUpTo(AtomicI64);

impl Default for RolledUpTo {
    fn default() -> Self {
        Self(AtomicI64::new(i64::MIN))
    }
}

impl RolledUpTo {
    pub fn get(&self) -> Option<Timestamp> {
        match self.0.load(Ordering::Acquire) {
            i64::MIN => None,
            ms => Some(Timestamp(ms)),
        }
    }

    fn set(&self, to: Timestamp) {
        self.0.fetch_max(to.0, Ordering::AcqRel);
    }
}

/// Steps one run of the `rollups` job takes at most (at the default 50,000 readings a
/// step, 500 M readings).
const MAX_STEPS_PER_RUN: u32 = 10_000;

/// Settings of the `rollups` job.
#[derive(Debug, Clone)]
pub struct RollupSettings {
    pub grace: Duration,
    pub max_rows_per_step: usize,
}

impl RollupSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            grace: config.duration(&config.rollups.grace),
            max_rows_per_step: config.rollups.max_rows_per_step,
        }
    }
}

/// One run of the `rollups` job: steps until the closed range is summarised.
pub async fn roll_up(
    ctx: &JobContext,
    store: &dyn Store,
    settings: &RollupSettings,
    rolled: &RolledUpTo,
) -> Result<JobReport, JobError> {
    let closed_before = Resolution::Minute.bucket_of(ago(settings.grace));
    let (mut scanned, mut written, mut dirty, mut steps) = (0_u64, 0_u64, 0_u64, 0_u32);
    loop {
        if ctx.is_cancelled() {
            return Ok(JobReport::new(format!(
                "cancelled after {steps} step(s): {scanned} reading(s) rolled into {written} bucket(s)"
            )));
        }
        if steps == MAX_STEPS_PER_RUN {
            // A huge backlog: give other jobs their turn; the next run goes on from the
            // watermarks, which every step commits.
            return Ok(JobReport::new(format!(
                "{scanned} reading(s) rolled into {written} bucket(s) in {steps} step(s); \
                 not caught up yet, the next run continues"
            )));
        }
        let report = store
            .rollups()
            .roll_up(closed_before, settings.max_rows_per_step)
            .await
            .map_err(JobError::from_error)?;
        steps += 1;
        scanned += report.readings_scanned;
        written += report.buckets_written;
        dirty += report.dirty_recomputed;
        // Under budget: every resolution reached `closed_before` in this step. (Each
        // resolution has its own budget and the 1-hour one may still be behind when the
        // 1-minute one is done, so a full step says nothing about being stuck: the store
        // moves each watermark by at least one bucket per step.)
        if report.readings_scanned < settings.max_rows_per_step as u64 {
            rolled.set(Resolution::Hour.bucket_of(closed_before));
            break;
        }
        // Let write batches waiting on the watermark lock go first.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(JobReport::new(format!(
        "{scanned} reading(s) rolled into {written} bucket(s), {dirty} dirty bucket(s) recomputed, \
         in {steps} step(s); rolled up to {}",
        closed_before.to_rfc3339()
    )))
}

/// Settings of the `readings-retention` job.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    pub raw: Duration,
    pub rollups: Duration,
    pub chunk: usize,
    pub pause: Duration,
    /// Tenant slug → (raw, rollups), for the tenants with their own retention.
    pub tenants: Vec<(String, Duration, Duration)>,
}

impl RetentionSettings {
    pub fn from_config(config: &Config) -> Self {
        let (raw, rollups) = config.retention_of("");
        Self {
            raw,
            rollups,
            chunk: config.retention.chunk,
            pause: config.duration(&config.retention.pause),
            tenants: config
                .retention
                .tenants
                .keys()
                .map(|slug| {
                    let (raw, rollups) = config.retention_of(slug);
                    (slug.clone(), raw, rollups)
                })
                .collect(),
        }
    }
}

/// Deleted rows of one run.
#[derive(Debug, Default)]
struct Deleted {
    raw: u64,
    rollups: u64,
}

/// One run of the `readings-retention` job.
///
/// It first rolls up what is pending (dirty buckets included), so no late reading's raw
/// row goes before its bucket is recomputed, and deletes raw readings only in whole
/// hours the rollups have covered: a deletion never splits a bucket.
pub async fn apply_retention(
    ctx: &JobContext,
    store: &dyn Store,
    settings: &RetentionSettings,
    rollups: &RollupSettings,
    rolled: &RolledUpTo,
) -> Result<JobReport, JobError> {
    roll_up(ctx, store, rollups, rolled).await?;
    let Some(rolled_up_to) = rolled.get() else {
        return Ok(JobReport::new(
            "cancelled before the rollups caught up; nothing deleted",
        ));
    };
    // Each scope with its own limits; with no override, one pass over every tenant.
    let mut passes: Vec<(RetentionScope, Duration, Duration)> = Vec::new();
    if settings.tenants.is_empty() {
        passes.push((RetentionScope::All, settings.raw, settings.rollups));
    } else {
        let mut own = Vec::new();
        for (slug, raw, rollups) in &settings.tenants {
            // A slug that names no tenant (yet) has nothing to delete.
            if let Some(tenant) = store
                .catalog()
                .tenant_by_slug(slug)
                .await
                .map_err(JobError::from_error)?
            {
                own.push((tenant.id, *raw, *rollups));
            }
        }
        for tenant in tenants_with_sensors(store).await? {
            let (raw, rollups) = own
                .iter()
                .find(|(id, _, _)| *id == tenant)
                .map_or((settings.raw, settings.rollups), |&(_, r, u)| (r, u));
            passes.push((RetentionScope::Tenant(tenant), raw, rollups));
        }
    }
    let mut deleted = Deleted::default();
    for (scope, raw, rollups) in passes {
        let raw_before = Resolution::Hour.bucket_of(ago(raw).min(rolled_up_to));
        deleted.raw += delete_in_chunks(ctx, settings, |chunk| {
            store.rollups().delete_raw_before(scope, raw_before, chunk)
        })
        .await?;
        deleted.rollups += delete_in_chunks(ctx, settings, |chunk| {
            store
                .rollups()
                .delete_rollups_before(scope, ago(rollups), chunk)
        })
        .await?;
        if ctx.is_cancelled() {
            break;
        }
    }
    Ok(JobReport::new(format!(
        "{} raw reading(s) and {} rollup row(s) past retention deleted",
        deleted.raw, deleted.rollups
    )))
}

/// Tenants owning at least one sensor (only they have readings).
async fn tenants_with_sensors(store: &dyn Store) -> Result<BTreeSet<TenantId>, JobError> {
    Ok(store
        .catalog()
        .all_sensors()
        .await
        .map_err(JobError::from_error)?
        .into_iter()
        .map(|s| s.tenant)
        .collect())
}

/// Calls `delete` until it deletes less than a chunk, pausing between calls.
async fn delete_in_chunks<F, Fut>(
    ctx: &JobContext,
    settings: &RetentionSettings,
    delete: F,
) -> Result<u64, JobError>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = vigia_store::StoreResult<u64>>,
{
    let mut total = 0;
    while !ctx.is_cancelled() {
        let n = delete(settings.chunk).await.map_err(JobError::from_error)?;
        total += n;
        if n < settings.chunk as u64 {
            break;
        }
        tokio::time::sleep(settings.pause).await;
    }
    Ok(total)
}
