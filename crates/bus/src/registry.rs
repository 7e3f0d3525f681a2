//! Opening a bus from its URL (`--bus` / `VIGIA_BUS`): an explicit table from URL scheme
//! to [`BusFactory`], as Quickwit's `StorageResolver` does for storage. Later backends
//! (Redis Streams, NATS JetStream) register their schemes here; configuration validates a
//! URL against the same table, so an unknown scheme is refused at start with the list of
//! supported ones.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Bus, BusError, Capacity, Durability, EmbeddedBus, EmbeddedBusOptions, VolatileBus};

/// What a factory may need besides the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenContext {
    /// The process's data directory (the embedded bus keeps `bus.sqlite3` there).
    pub data_dir: PathBuf,
    /// How durable a publish is before it returns (for backends that choose).
    pub durability: Durability,
    /// Per-topic lag past which publishes answer `Full`.
    pub capacity: Capacity,
    /// Bytes of waiting messages a backend may hold in process memory.
    pub memory_budget_bytes: usize,
    /// How long a delivery may stay unacknowledged before a broker-backed bus hands it to
    /// another consumer (its consumer is presumed dead): Redis `XAUTOCLAIM` idle time,
    /// JetStream `ack_wait`. Embedded backends redeliver on restart instead.
    pub claim_idle: Duration,
}

impl OpenContext {
    /// Default memory budget for waiting messages: 32 MiB.
    pub const DEFAULT_MEMORY_BUDGET_BYTES: usize = 32 * 1024 * 1024;
    /// Default [`OpenContext::claim_idle`]: long enough for a worker's slowest store
    /// commit, short enough that a dead worker's readings move on within a minute.
    pub const DEFAULT_CLAIM_IDLE: Duration = Duration::from_secs(30);

    /// A context for `data_dir` with every other setting at its default.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            durability: Durability::default(),
            capacity: Capacity::default(),
            memory_budget_bytes: Self::DEFAULT_MEMORY_BUDGET_BYTES,
            claim_idle: Self::DEFAULT_CLAIM_IDLE,
        }
    }
}

/// Why a bus could not be opened from its URL.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No factory is registered for the URL's scheme.
    #[error("bus `{url}`: unknown scheme `{scheme}`; supported: {}", supported.join(", "))]
    UnknownScheme {
        /// The URL as given.
        url: String,
        /// Its scheme.
        scheme: String,
        /// Every registered scheme, sorted.
        supported: Vec<&'static str>,
    },
    /// The scheme is known but the rest of the URL is not valid for it.
    #[error("bus `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong, in words a person can act on.
        reason: String,
    },
    /// The backend failed to open (file, connection).
    #[error("could not open the bus `{url}`: {source}")]
    Backend {
        /// The URL as given.
        url: String,
        /// What the backend said.
        #[source]
        source: BusError,
    },
}

/// A bus URL split at its scheme: `redis://host:6379/0` is scheme `redis` and rest
/// `host:6379/0`; a bare word such as `memory` is a scheme with an empty rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusUrl {
    raw: String,
    scheme: String,
    rest: String,
}

impl BusUrl {
    /// Splits `url`; the scheme is case-insensitive and returned in lowercase.
    pub fn parse(url: &str) -> Result<Self, OpenError> {
        let trimmed = url.trim();
        let (scheme, rest) = trimmed.split_once("://").unwrap_or((trimmed, ""));
        let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if !valid {
            return Err(OpenError::InvalidUrl {
                url: url.into(),
                reason: "expected `<scheme>://…` or a bare scheme such as `memory`".into(),
            });
        }
        Ok(Self {
            raw: url.into(),
            scheme: scheme.to_ascii_lowercase(),
            rest: rest.into(),
        })
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The scheme, lowercase.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Everything after `://` (empty for a bare scheme).
    pub fn rest(&self) -> &str {
        &self.rest
    }

    fn invalid(&self, reason: impl Into<String>) -> OpenError {
        OpenError::InvalidUrl {
            url: self.raw.clone(),
            reason: reason.into(),
        }
    }
}

/// Opens one kind of bus from its URL.
#[async_trait]
pub trait BusFactory: Send + Sync + 'static {
    /// Checks the URL's form without connecting or touching files (configuration
    /// validation); says what is wrong in words a person can act on.
    fn validate(&self, url: &BusUrl) -> Result<(), String>;

    /// Opens the bus. Only called with URLs `validate` accepted.
    async fn open(&self, url: &BusUrl, context: &OpenContext) -> Result<Arc<dyn Bus>, BusError>;
}

/// The table from URL scheme to [`BusFactory`].
#[derive(Clone, Default)]
pub struct BusRegistry {
    factories: BTreeMap<&'static str, Arc<dyn BusFactory>>,
}

impl BusRegistry {
    /// A registry with no backend at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// The backends of this build: `memory`, `memory://` and `embedded://` (the embedded
    /// durable log in the data dir; `memory` is the documented default),
    /// `volatile://` (in memory, not durable: tests and experiments), and `redis://` /
    /// `redis+cluster://` (Redis Streams, [`crate::redis`]; `rediss://` is refused, this
    /// build has no TLS), and `nats://` (NATS JetStream, [`crate::nats`]).
    pub fn builtin() -> Self {
        let mut registry = Self::new();
        let embedded: Arc<dyn BusFactory> = Arc::new(EmbeddedFactory);
        let redis: Arc<dyn BusFactory> = Arc::new(crate::redis::RedisFactory);
        registry
            .register("nats", Arc::new(crate::nats::NatsFactory))
            .register("memory", Arc::clone(&embedded))
            .register("embedded", embedded)
            .register("volatile", Arc::new(VolatileFactory))
            .register("redis", Arc::clone(&redis))
            .register("redis+cluster", Arc::clone(&redis))
            .register("rediss", redis);
        registry
    }

    /// Makes `scheme` (lowercase) open through `factory`, replacing any previous one.
    pub fn register(&mut self, scheme: &'static str, factory: Arc<dyn BusFactory>) -> &mut Self {
        self.factories.insert(scheme, factory);
        self
    }

    /// Every registered scheme, sorted.
    pub fn schemes(&self) -> Vec<&'static str> {
        self.factories.keys().copied().collect()
    }

    /// Checks that `url` names a registered scheme in a form its factory accepts,
    /// without opening anything.
    pub fn validate(&self, url: &str) -> Result<(), OpenError> {
        self.resolve(url).map(drop)
    }

    /// Opens the bus `url` names.
    pub async fn open(&self, url: &str, context: &OpenContext) -> Result<Arc<dyn Bus>, OpenError> {
        let (parsed, factory) = self.resolve(url)?;
        factory
            .open(&parsed, context)
            .await
            .map_err(|source| OpenError::Backend {
                url: url.into(),
                source,
            })
    }

    fn resolve(&self, url: &str) -> Result<(BusUrl, &Arc<dyn BusFactory>), OpenError> {
        let parsed = BusUrl::parse(url)?;
        let Some(factory) = self.factories.get(parsed.scheme()) else {
            return Err(OpenError::UnknownScheme {
                url: url.into(),
                scheme: parsed.scheme.clone(),
                supported: self.schemes(),
            });
        };
        factory
            .validate(&parsed)
            .map_err(|reason| parsed.invalid(reason))?;
        Ok((parsed, factory))
    }
}

/// Opens the bus `url` names with this build's backends ([`BusRegistry::builtin`]).
pub async fn open(url: &str, context: &OpenContext) -> Result<Arc<dyn Bus>, OpenError> {
    BusRegistry::builtin().open(url, context).await
}

/// Checks `url` against this build's backends without opening anything.
pub fn validate_url(url: &str) -> Result<(), OpenError> {
    BusRegistry::builtin().validate(url)
}

/// The URL schemes this build's backends accept, sorted.
pub fn supported_schemes() -> Vec<&'static str> {
    BusRegistry::builtin().schemes()
}

/// Refuses anything after the scheme: these backends are configured by the context.
fn no_rest(url: &BusUrl, what: &str) -> Result<(), String> {
    if url.rest().is_empty() {
        Ok(())
    } else {
        Err(format!(
            "`{}://` takes no host or path ({what}); write `{}://`",
            url.scheme(),
            url.scheme()
        ))
    }
}

/// `memory`, `memory://`, `embedded://`: the embedded durable log in the data dir.
struct EmbeddedFactory;

/// The embedded bus's file in the data dir.
const EMBEDDED_FILE: &str = "bus.sqlite3";

#[async_trait]
impl BusFactory for EmbeddedFactory {
    fn validate(&self, url: &BusUrl) -> Result<(), String> {
        no_rest(url, "the log is `bus.sqlite3` in the data dir")
    }

    async fn open(&self, _url: &BusUrl, context: &OpenContext) -> Result<Arc<dyn Bus>, BusError> {
        let options = EmbeddedBusOptions {
            durability: context.durability,
            capacity: context.capacity,
            memory_budget_bytes: context.memory_budget_bytes,
            ..EmbeddedBusOptions::new(context.data_dir.join(EMBEDDED_FILE))
        };
        // Opening reads back what the last run left: file I/O, off the runtime.
        let bus = tokio::task::spawn_blocking(move || EmbeddedBus::open(options))
            .await
            .map_err(|e| BusError::Unavailable(format!("opening the embedded bus: {e}")))??;
        Ok(Arc::new(bus))
    }
}

/// `volatile://`: in memory, not durable.
struct VolatileFactory;

#[async_trait]
impl BusFactory for VolatileFactory {
    fn validate(&self, url: &BusUrl) -> Result<(), String> {
        no_rest(url, "it lives in this process's memory")
    }

    async fn open(&self, _url: &BusUrl, context: &OpenContext) -> Result<Arc<dyn Bus>, BusError> {
        Ok(Arc::new(VolatileBus::new(context.capacity)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Topic;

    #[test]
    fn urls_split_at_their_scheme() {
        // (url, scheme, rest)
        let cases = [
            ("memory", "memory", ""),
            ("memory://", "memory", ""),
            ("EMBEDDED://", "embedded", ""),
            (" volatile:// ", "volatile", ""),
            ("redis://host:6379/0?x=1", "redis", "host:6379/0?x=1"),
            ("nats+tls://a,b", "nats+tls", "a,b"),
        ];
        for (url, scheme, rest) in cases {
            let parsed = BusUrl::parse(url).unwrap();
            assert_eq!((parsed.scheme(), parsed.rest()), (scheme, rest), "{url}");
            assert_eq!(parsed.as_str(), url);
        }
        for bad in ["", "://x", "1redis://", "re dis://", "c:\\bus"] {
            assert!(
                matches!(BusUrl::parse(bad), Err(OpenError::InvalidUrl { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn validation_names_the_supported_schemes_and_what_is_wrong() {
        assert_eq!(
            supported_schemes(),
            [
                "embedded",
                "memory",
                "nats",
                "redis",
                "redis+cluster",
                "rediss",
                "volatile"
            ]
        );
        for good in [
            "memory",
            "memory://",
            "embedded://",
            "volatile://",
            "Memory",
            "redis://127.0.0.1:6379/0?prefix=vigia",
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
            "nats://127.0.0.1:4222",
            "nats://u:p@n1,n2:4223/?stream_prefix=plant_1&group=w",
        ] {
            validate_url(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        // (url, words the error must contain)
        let cases: &[(&str, &[&str])] = &[
            (
                "kafka://broker",
                &[
                    "bus `kafka://broker`",
                    "unknown scheme `kafka`",
                    "embedded, memory, nats, redis, redis+cluster, rediss, volatile",
                ],
            ),
            ("amqp", &["unknown scheme `amqp`", "supported: embedded"]),
            ("nats", &["name a server"]),
            ("nats://h?prefix=x", &["unknown query parameter `prefix`"]),
            ("redis", &["name a host"]),
            (
                "rediss://cache:6380",
                &["TLS", "not supported by this build"],
            ),
            ("redis://h?bogus=1", &["unknown query parameter `bogus`"]),
            ("memory://elsewhere", &["takes no host or path", "data dir"]),
            ("volatile:///tmp", &["takes no host or path"]),
            ("", &["bare scheme"]),
        ];
        for (url, words) in cases {
            let message = validate_url(url).expect_err(url).to_string();
            for word in *words {
                assert!(message.contains(word), "{url}: {message}");
            }
        }
    }

    /// A factory that records what it was asked to open.
    struct Recording;

    #[async_trait]
    impl BusFactory for Recording {
        fn validate(&self, url: &BusUrl) -> Result<(), String> {
            if url.rest().contains("bad") {
                Err("bad host".into())
            } else {
                Ok(())
            }
        }

        async fn open(
            &self,
            url: &BusUrl,
            context: &OpenContext,
        ) -> Result<Arc<dyn Bus>, BusError> {
            if url.rest() == "down" {
                return Err(BusError::Unavailable("connection refused".into()));
            }
            Ok(Arc::new(VolatileBus::new(context.capacity)))
        }
    }

    #[tokio::test]
    async fn registered_factories_open_their_scheme_only() {
        let mut registry = BusRegistry::new();
        assert!(registry.schemes().is_empty());
        registry.register("test", Arc::new(Recording));
        let context = OpenContext::new("/nonexistent");
        let bus = registry.open("test://up", &context).await.unwrap();
        assert_eq!(bus.lag(Topic::READINGS).await.unwrap(), 0);
        let cases: &[(&str, &str)] = &[
            ("test://bad", "bad host"),
            ("test://down", "connection refused"),
            ("memory", "supported: test"),
        ];
        for (url, expected) in cases {
            let message = match registry.open(url, &context).await {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{url} opened"),
            };
            assert!(message.contains(expected), "{url}: {message}");
        }
    }

    #[tokio::test]
    async fn the_builtin_schemes_open_working_buses() {
        let dir = tempfile::tempdir().unwrap();
        let mut context = OpenContext::new(dir.path());
        context.durability = Durability::Os;
        for url in ["volatile://", "memory"] {
            let bus = open(url, &context).await.unwrap();
            crate::readings::publish(
                &*bus,
                vigia_core::IngestBatch {
                    tenant: vigia_core::TenantId(1),
                    received_ms: 0,
                    readings: Vec::new(),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
            bus.ping().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        assert!(dir.path().join(EMBEDDED_FILE).exists());
        // Each handle was dropped at the end of its iteration, releasing the file lock.
        let again = open("embedded://", &context).await.unwrap();
        assert_eq!(again.lag(Topic::READINGS).await.unwrap(), 0);
    }
}
