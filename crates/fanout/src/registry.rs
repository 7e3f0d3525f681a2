//! Opening a fan-out from its URL (`fanout` / `VIGIA_FANOUT`), by scheme, as the bus's
//! registry does: `memory://` (or empty) in process, `redis://` Redis pub/sub, `nats://`
//! core NATS. Host, port, credentials and database are written as for the bus (the
//! same parser reads them), so the bus's server can carry the fan-out too; the query
//! takes the fan-out's own parameters:
//!
//! | parameter | default | meaning |
//! | --- | --- | --- |
//! | `prefix` | `vigia` | channels `PREFIX:live`, `PREFIX:control` (Redis) or subjects `PREFIX.live`, `PREFIX.control` (NATS); deployments with different prefixes on one server do not hear each other |
//! | `timeout_ms` | `2000` | connect timeout, and the longest one publish or presence check may take |

use std::sync::Arc;
use std::time::Duration;

use vigia_bus::nats::NatsConfig;
use vigia_bus::redis::RedisConfig;

use crate::{Fanout, InProcessFanout, NatsFanout, RedisFanout};

/// Settings every backend takes besides its URL; the defaults suit production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutOptions {
    /// Live events a subscriber may fall behind before it is told it lagged (at least
    /// [`crate::MIN_LIVE_CAPACITY`]).
    pub live_capacity: usize,
    /// Messages each outgoing queue (live, control) holds while the broker is slow or
    /// away; past it publishes are dropped and counted.
    pub queue_capacity: usize,
    /// How often a handle checks whether other processes have live subscribers (and
    /// that its subscriber connection is alive).
    pub presence_every: Duration,
    /// The largest message sent or accepted, in bytes (NATS servers may lower it to
    /// their `max_payload`).
    pub max_message_bytes: usize,
}

impl FanoutOptions {
    /// Default [`FanoutOptions::live_capacity`].
    pub const DEFAULT_LIVE_CAPACITY: usize = 1024;
    /// Default [`FanoutOptions::queue_capacity`].
    pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
    /// Default [`FanoutOptions::presence_every`].
    pub const DEFAULT_PRESENCE_EVERY: Duration = Duration::from_secs(1);
    /// Default [`FanoutOptions::max_message_bytes`]: 1 MiB, NATS's default `max_payload`.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
}

impl Default for FanoutOptions {
    fn default() -> Self {
        Self {
            live_capacity: Self::DEFAULT_LIVE_CAPACITY,
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            presence_every: Self::DEFAULT_PRESENCE_EVERY,
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// Why a fan-out could not be opened from its URL.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No backend has the URL's scheme.
    #[error("fan-out `{url}`: unknown scheme `{scheme}`; supported: {}", SCHEMES.join(", "))]
    UnknownScheme {
        /// The URL as given.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// The scheme is known but the rest of the URL is not valid for it.
    #[error("fan-out `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong, in words a person can act on.
        reason: String,
    },
    /// The broker could not be reached or refused.
    #[error("could not open the fan-out `{url}`: {reason}")]
    Backend {
        /// The URL as given.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// The schemes [`open`] accepts, sorted (`rediss` only to refuse it clearly: no TLS in
/// this build).
const SCHEMES: [&str; 4] = ["memory", "nats", "redis", "rediss"];

/// Default channel / subject prefix.
pub const DEFAULT_PREFIX: &str = "vigia";
const MAX_PREFIX: usize = 64;
const PARAMETERS: [&str; 2] = ["prefix", "timeout_ms"];

/// The URL schemes this build accepts, sorted.
pub fn supported_schemes() -> Vec<&'static str> {
    SCHEMES.to_vec()
}

/// A checked fan-out URL.
#[derive(Debug)]
pub(crate) enum Target {
    Memory,
    Redis { config: RedisConfig, prefix: String },
    Nats { config: NatsConfig, prefix: String },
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self, OpenError> {
        let invalid = |reason: String| OpenError::InvalidUrl {
            url: url.into(),
            reason,
        };
        let trimmed = url.trim();
        if trimmed.is_empty() {
            return Ok(Target::Memory);
        }
        let (scheme, rest) = trimmed.split_once("://").unwrap_or((trimmed, ""));
        let scheme = scheme.to_ascii_lowercase();
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut prefix = DEFAULT_PREFIX.to_string();
        let mut timeout = String::new();
        let mut seen = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !PARAMETERS.contains(&key) {
                return Err(invalid(format!(
                    "unknown query parameter `{key}`; the fan-out takes {}",
                    PARAMETERS.join(", ")
                )));
            }
            if seen.contains(&key) {
                return Err(invalid(format!("query parameter `{key}` is given twice")));
            }
            seen.push(key);
            match key {
                "prefix" => prefix = checked_prefix(value).map_err(invalid)?,
                _ => timeout = format!("?timeout_ms={value}"),
            }
        }
        match scheme.as_str() {
            "memory" if rest.is_empty() => Ok(Target::Memory),
            "memory" => Err(invalid(
                "`memory://` takes no host or query (it is this process); write `memory://`".into(),
            )),
            "redis" | "rediss" => {
                let config = RedisConfig::parse(&format!("{scheme}://{location}{timeout}"))
                    .map_err(invalid)?;
                Ok(Target::Redis { config, prefix })
            }
            "redis+cluster" => Err(invalid(
                "Redis Cluster forwards pub/sub to every node: name any one node as \
                 `redis://HOST:PORT`"
                    .into(),
            )),
            "nats" => {
                let config =
                    NatsConfig::parse(&format!("nats://{location}{timeout}")).map_err(invalid)?;
                Ok(Target::Nats { config, prefix })
            }
            _ if !rest.is_empty() || scheme.chars().all(|c| c.is_ascii_alphanumeric()) => {
                Err(OpenError::UnknownScheme {
                    url: url.into(),
                    scheme,
                })
            }
            _ => Err(invalid(
                "expected `<scheme>://…` or a bare scheme such as `memory`".into(),
            )),
        }
    }
}

/// A prefix: short, of characters that need no quoting in Redis channel names or NATS
/// subject tokens.
fn checked_prefix(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= MAX_PREFIX
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "`prefix` must be 1 to {MAX_PREFIX} letters, digits, `-` or `_`, not `{value}`"
        ))
    }
}

/// Checks `url` without connecting (configuration validation).
pub fn validate_url(url: &str) -> Result<(), OpenError> {
    Target::parse(url).map(drop)
}

/// Opens the fan-out `url` names. Broker backends connect and subscribe before this
/// returns, and fail within about twice the URL's `timeout_ms` when the broker does
/// not answer.
pub async fn open(url: &str, options: &FanoutOptions) -> Result<Arc<dyn Fanout>, OpenError> {
    let backend = |reason: String| OpenError::Backend {
        url: url.into(),
        reason,
    };
    Ok(match Target::parse(url)? {
        Target::Memory => Arc::new(InProcessFanout::new(options.live_capacity)),
        Target::Redis { config, prefix } => Arc::new(
            RedisFanout::open(config, &prefix, options)
                .await
                .map_err(backend)?,
        ),
        Target::Nats { config, prefix } => Arc::new(
            NatsFanout::open(config, &prefix, options)
                .await
                .map_err(backend)?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend_and_its_prefix() {
        for memory in ["", " ", "memory", "memory://", "MEMORY://"] {
            assert!(
                matches!(Target::parse(memory), Ok(Target::Memory)),
                "{memory:?}"
            );
        }
        match Target::parse("redis://u:p@cache:6380/2?prefix=plant_1&timeout_ms=500").unwrap() {
            Target::Redis { config, prefix } => {
                assert_eq!(prefix, "plant_1");
                assert_eq!(config.nodes, ["redis://u:p@cache:6380/2"]);
                assert_eq!(config.timeout, Duration::from_millis(500));
            }
            other => panic!("{other:?}"),
        }
        match Target::parse("nats://a,b:4223").unwrap() {
            Target::Nats { config, prefix } => {
                assert_eq!(prefix, DEFAULT_PREFIX);
                assert_eq!(config.servers, ["a:4222", "b:4223"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases: &[(&str, &[&str])] = &[
            (
                "kafka://broker",
                &[
                    "fan-out `kafka://broker`",
                    "unknown scheme `kafka`",
                    "memory, nats, redis, rediss",
                ],
            ),
            ("amqp", &["unknown scheme `amqp`"]),
            (
                "rediss://cache:6380",
                &["TLS", "not supported by this build"],
            ),
            ("redis+cluster://a:1,b:2", &["any one node"]),
            (
                "redis://h?group=w",
                &["unknown query parameter `group`", "prefix, timeout_ms"],
            ),
            (
                "nats://h?stream_prefix=x",
                &["unknown query parameter `stream_prefix`"],
            ),
            ("redis://h?prefix=a.b", &["`prefix` must be"]),
            ("redis://h?prefix=a&prefix=b", &["given twice"]),
            ("redis://h?timeout_ms=0", &["timeout_ms"]),
            ("redis://", &["name a host"]),
            ("nats://", &["name a server"]),
            ("memory://elsewhere", &["takes no host"]),
            ("c:\\fanout", &["bare scheme"]),
        ];
        for (url, words) in cases {
            let message = validate_url(url).expect_err(url).to_string();
            for word in *words {
                assert!(message.contains(word), "{url}: {message}");
            }
        }
    }

    #[tokio::test]
    async fn memory_opens_in_process_and_a_dead_broker_is_a_clear_error() {
        let fanout = open("memory://", &FanoutOptions::default()).await.unwrap();
        assert!(fanout.live_is_idle());
        // Port 1 on loopback is never a broker here.
        for url in [
            "redis://127.0.0.1:1?timeout_ms=300",
            "nats://127.0.0.1:1?timeout_ms=300",
        ] {
            let message = open(url, &FanoutOptions::default())
                .await
                .err()
                .unwrap_or_else(|| panic!("{url} opened"))
                .to_string();
            assert!(
                message.starts_with("could not open the fan-out"),
                "{message}"
            );
        }
    }
}
