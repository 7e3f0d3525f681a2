//! `[robots]`: the robots' settings, the service every API process uses, and the
//! orchestrator the `robots` role starts (`vigia_orchestrator`). Kept here so `config.rs`
//! and `serve.rs` only name it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use vigia_core::parse_duration_ms;
use vigia_orchestrator::{Orchestrator, OrchestratorConfig};
use vigia_robots::{InputLimits, RetryPolicy};
use vigia_services::robots::RobotLimits;
use vigia_services::{AuditTrail, RobotService};
use vigia_store::Store;

/// `[robots]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RobotsConfig {
    /// Attempts in all (the first included) before a robot is dead; 1–100.
    pub max_attempts: u32,
    /// How long an attempt lives without a heartbeat or report; at least 1s.
    pub lease: String,
    /// How long a cancelled running robot's worker has to stop before it is stopped by
    /// force; at least 1s.
    pub cancel_grace: String,
    /// How often an idle orchestrator looks for queued robots; 10ms to 60s.
    pub poll_every: String,
    /// Robots one `robots` process runs at once; 1–10000.
    pub concurrency: usize,
    /// The first retry's backoff ceiling (full jitter, doubling up to `retry_max_delay`).
    pub retry_base_delay: String,
    /// No retry waits longer than this.
    pub retry_max_delay: String,
    /// Largest robot input (and worker output), bytes; past it 413.
    pub max_input_bytes: usize,
    /// Where `http` workers report (`{callback_url}/api/v1/robots/{id}/…`); default the
    /// server's own `http://<listen address>`.
    pub callback_url: Option<String>,
}

impl Default for RobotsConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            lease: "30s".into(),
            cancel_grace: "30s".into(),
            poll_every: "200ms".into(),
            concurrency: 16,
            retry_base_delay: "1s".into(),
            retry_max_delay: "5m".into(),
            max_input_bytes: 256 * 1024,
            callback_url: None,
        }
    }
}

fn millis(name: &str, value: &str) -> anyhow::Result<i64> {
    parse_duration_ms(value).map_err(|e| anyhow::anyhow!("setting `robots.{name}`: {e}"))
}

impl RobotsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=100).contains(&self.max_attempts) {
            bail!("robots.max_attempts must be between 1 and 100");
        }
        if millis("lease", &self.lease)? < 1_000 {
            bail!("robots.lease must be at least 1s");
        }
        if millis("cancel_grace", &self.cancel_grace)? < 1_000 {
            bail!("robots.cancel_grace must be at least 1s");
        }
        let poll = millis("poll_every", &self.poll_every)?;
        if !(10..=60_000).contains(&poll) {
            bail!("robots.poll_every must be between 10ms and 60s");
        }
        if !(1..=10_000).contains(&self.concurrency) {
            bail!("robots.concurrency must be between 1 and 10000");
        }
        let base = millis("retry_base_delay", &self.retry_base_delay)?;
        let max = millis("retry_max_delay", &self.retry_max_delay)?;
        if base < 0 || max < base {
            bail!("robots.retry_max_delay must be at least robots.retry_base_delay");
        }
        if self.max_input_bytes < 1024 {
            bail!("robots.max_input_bytes must be at least 1024");
        }
        if let Some(url) = &self.callback_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("robots.callback_url must start with http:// or https://, not `{url}`");
            }
        }
        Ok(())
    }

    fn ms(&self, value: &str) -> i64 {
        parse_duration_ms(value).unwrap_or(0)
    }

    /// What the service applies (validated settings).
    pub fn limits(&self) -> RobotLimits {
        RobotLimits {
            input: InputLimits {
                max_bytes: self.max_input_bytes,
                ..InputLimits::default()
            },
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                base_delay_ms: self.ms(&self.retry_base_delay).max(0) as u64,
                max_delay_ms: self.ms(&self.retry_max_delay).max(0) as u64,
            },
            lease_ms: self.ms(&self.lease),
            cancel_grace_ms: self.ms(&self.cancel_grace),
        }
    }
}

/// The service (with the built-in modules registered).
pub async fn service(
    config: &RobotsConfig,
    store: Arc<dyn Store>,
    audit: Arc<AuditTrail>,
) -> anyhow::Result<Arc<RobotService>> {
    let service = Arc::new(RobotService::new(store, audit, config.limits()));
    service
        .register_builtins()
        .await
        .map_err(|e| anyhow::anyhow!("could not register the built-in robot modules: {e}"))?;
    Ok(service)
}

/// Starts the orchestrator of the `robots` role; `base` is this server's own URL.
pub fn start(
    config: &RobotsConfig,
    store: Arc<dyn Store>,
    service: Arc<RobotService>,
    base: &str,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let orchestrator = Orchestrator::new(
        store,
        service,
        OrchestratorConfig {
            concurrency: config.concurrency,
            poll_every: Duration::from_millis(config.ms(&config.poll_every).max(10) as u64),
            lease_ms: config.ms(&config.lease),
            max_attempts: config.max_attempts,
            cancel_grace_ms: config.ms(&config.cancel_grace),
            callback_base: config
                .callback_url
                .clone()
                .unwrap_or_else(|| base.to_string()),
            ..OrchestratorConfig::default()
        },
    );
    orchestrator.spawn(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_name_their_key() {
        assert!(RobotsConfig::default().validate().is_ok());
        type Change = fn(&mut RobotsConfig);
        let cases: &[(Change, &str)] = &[
            (|c| c.max_attempts = 0, "robots.max_attempts"),
            (
                |c| c.lease = "10ms".into(),
                "robots.lease must be at least 1s",
            ),
            (|c| c.lease = "soon".into(), "setting `robots.lease`"),
            (|c| c.cancel_grace = "0s".into(), "robots.cancel_grace"),
            (|c| c.poll_every = "2m".into(), "robots.poll_every"),
            (|c| c.concurrency = 0, "robots.concurrency"),
            (
                |c| c.retry_max_delay = "1ms".into(),
                "robots.retry_max_delay",
            ),
            (|c| c.max_input_bytes = 10, "robots.max_input_bytes"),
            (
                |c| c.callback_url = Some("ftp://x".into()),
                "robots.callback_url",
            ),
        ];
        for (change, needle) in cases {
            let mut config = RobotsConfig::default();
            change(&mut config);
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(needle), "{error} lacks {needle}");
        }
    }
}
