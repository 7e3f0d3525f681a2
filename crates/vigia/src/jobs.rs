//! The `scheduler` role: the scheduler's leader lease kept in the store (so one process
//! of several runs the jobs), the housekeeping jobs every deployment needs, and the
//! readings' rollups and retention ([`readings`]). Later issues register their jobs
//! (partitions, price scraping, robots' loops) in [`register_jobs`].

pub mod readings;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use vigia_core::Timestamp;
use vigia_scheduler::{
    job_fn, JobError, JobOptions, JobReport, LeaseError, Leases, Schedule, Scheduler,
    SchedulerHandle, SchedulerOptions,
};
use vigia_store::Store;

use crate::config::Config;
use readings::{RetentionSettings, RolledUpTo, RollupSettings};

/// The store's lease table as the scheduler's lease port.
pub struct StoreLeases(pub Arc<dyn Store>);

#[async_trait]
impl Leases for StoreLeases {
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, LeaseError> {
        self.0
            .leases()
            .try_acquire(name, holder, ttl, Timestamp::now())
            .await
            .map_err(|e| LeaseError::Unavailable(e.to_string()))
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), LeaseError> {
        self.0
            .leases()
            .release(name, holder)
            .await
            .map_err(|e| LeaseError::Unavailable(e.to_string()))
    }
}

/// Builds the scheduler with every job and starts it.
pub fn start(config: &Config, store: Arc<dyn Store>) -> anyhow::Result<SchedulerHandle> {
    vigia_scheduler::metrics::describe();
    let mut scheduler = Scheduler::new(
        Arc::new(StoreLeases(store.clone())),
        SchedulerOptions {
            lease_ttl: config.duration(&config.scheduler.lease_ttl),
            ..SchedulerOptions::default()
        },
    )?;
    register_jobs(&mut scheduler, config, store)?;
    Ok(scheduler.start())
}

/// The instant `age` before now.
fn ago(age: Duration) -> Timestamp {
    let ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    Timestamp(Timestamp::now().0.saturating_sub(ms))
}

/// Every job of this build.
pub fn register_jobs(
    scheduler: &mut Scheduler,
    config: &Config,
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let housekeeping = store.clone();
    scheduler.register(
        "store-housekeeping",
        Schedule::Every(config.duration(&config.scheduler.housekeeping_every)),
        job_fn("store-housekeeping", move |_ctx| {
            let store = housekeeping.clone();
            async move {
                let summary = store.housekeep().await.map_err(JobError::from_error)?;
                Ok(JobReport::new(summary))
            }
        }),
        JobOptions {
            timeout: Some(Duration::from_secs(300)),
            run_at_start: true,
            ..JobOptions::default()
        },
    )?;
    register_readings_jobs(scheduler, config, store.clone())?;
    let audit_keep = config.duration(&config.scheduler.audit_retention);
    let outbox_keep = config.duration(&config.scheduler.outbox_retention);
    scheduler.register(
        "retention",
        Schedule::cron(config.scheduler.retention_cron.clone())?,
        job_fn("retention", move |_ctx| {
            let store = store.clone();
            async move {
                let audit = store
                    .audit()
                    .prune(ago(audit_keep))
                    .await
                    .map_err(JobError::from_error)?;
                let outbox = store
                    .outbox()
                    .prune(ago(outbox_keep))
                    .await
                    .map_err(JobError::from_error)?;
                Ok(JobReport::new(format!(
                    "{audit} audit row(s) and {outbox} outbox event(s) past retention removed"
                )))
            }
        }),
        JobOptions {
            timeout: Some(Duration::from_secs(600)),
            ..JobOptions::default()
        },
    )?;
    Ok(())
}

/// `rollups` and `readings-retention`, sharing how far the rollups have got.
fn register_readings_jobs(
    scheduler: &mut Scheduler,
    config: &Config,
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let rolled = Arc::new(RolledUpTo::default());
    let rollup_settings = Arc::new(RollupSettings::from_config(config));
    let (rollup_store, rollup_mark, settings) =
        (store.clone(), rolled.clone(), rollup_settings.clone());
    scheduler.register(
        "rollups",
        Schedule::Every(config.duration(&config.rollups.every)),
        job_fn("rollups", move |ctx| {
            let (store, rolled, settings) =
                (rollup_store.clone(), rollup_mark.clone(), settings.clone());
            async move { readings::roll_up(&ctx, store.as_ref(), &settings, &rolled).await }
        }),
        JobOptions {
            // Steps check for cancellation; a backlog may take long and that is fine.
            timeout: None,
            run_at_start: true,
            ..JobOptions::default()
        },
    )?;
    let settings = Arc::new(RetentionSettings::from_config(config));
    scheduler.register(
        "readings-retention",
        Schedule::Every(config.duration(&config.retention.every)),
        job_fn("readings-retention", move |ctx| {
            let (store, rolled) = (store.clone(), rolled.clone());
            let (settings, rollups) = (settings.clone(), rollup_settings.clone());
            async move {
                readings::apply_retention(&ctx, store.as_ref(), &settings, &rollups, &rolled).await
            }
        }),
        JobOptions::default(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use vigia_store::OpenContext;

    use super::*;

    /// The store's lease table passes the scheduler's lease suite on both backends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_leases_pass_the_lease_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        for url in ["sqlite", "volatile://"] {
            let store = vigia_store::open(url, &OpenContext::new(dir.path()))
                .await
                .unwrap();
            // Whole milliseconds are stored: 300 ms is far above the resolution.
            vigia_scheduler::conformance::run_all(
                &StoreLeases(store.clone()),
                Duration::from_millis(300),
            )
            .await;
            store.close().await;
        }
    }

    #[tokio::test]
    async fn every_job_registers_with_the_default_settings() {
        let dir = tempfile::tempdir().unwrap();
        let store = vigia_store::open("volatile://", &OpenContext::new(dir.path()))
            .await
            .unwrap();
        let config = Config::default();
        let mut scheduler = Scheduler::new(
            Arc::new(StoreLeases(store.clone())),
            SchedulerOptions::default(),
        )
        .unwrap();
        register_jobs(&mut scheduler, &config, store).unwrap();
        let handle = scheduler.start();
        let names: Vec<String> = handle.status().into_iter().map(|j| j.name).collect();
        assert_eq!(
            names,
            [
                "store-housekeeping",
                "rollups",
                "readings-retention",
                "retention"
            ]
        );
        handle.stop(Duration::from_secs(1)).await;
    }
}
