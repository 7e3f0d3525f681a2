//! The one typed configuration of `vigia serve`.
//!
//! Sources, later ones winning: built-in defaults → a TOML file (`--config FILE`, or
//! `./vigia.toml` when present) → `VIGIA_*` environment variables (also read from a
//! `.env` file; nested keys use `__`, e.g. `VIGIA_INGEST__MAX_BODY_BYTES`) → command-line
//! flags. With no file and no variables, `vigia serve` runs on the embedded defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use vigia_core::{parse_duration_ms, Durability};
use vigia_ingest::Provisioning;

/// Every setting, with defaults that need no file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Where the embedded store, bus and bootstrap token live.
    pub data_dir: PathBuf,
    /// Store URL: `sqlite` (in the data dir), `sqlite:///path/to/file.sqlite3`, or
    /// `volatile://` (in memory, lost on exit).
    pub store: String,
    /// Connections a server store (PostgreSQL, MySQL) holds open in all, write and read
    /// pools together; at least 2 (one writer, one reader). Embedded SQLite ignores it.
    pub store_max_connections: u32,
    /// Optional read replica of a server store, for queries that tolerate lag (series,
    /// lists, reports); writes, authentication and read-your-writes stay on `store`.
    pub store_read_url: Option<String>,
    /// Bus URL: `memory` (default; embedded, durable; file in the data dir), or any
    /// scheme of `vigia_bus::supported_schemes()`.
    pub bus: String,
    /// Readings partitions on a shared bus (1 to 16), the same in every process: each
    /// sensor's readings travel on one partition and one worker process owns each
    /// partition at a time, so one process judges all of a sensor's readings (rate
    /// windows, holds, offline rules). Absent: 8 on `redis://` and `nats://`, 1 on the
    /// embedded bus, which refuses more (one process owns everything anyway). Change it
    /// only with the bus drained: readings waiting on a partition past the new count are
    /// not read.
    pub bus_partitions: Option<usize>,
    /// Fan-out URL (live events and cache invalidations between processes): `memory`
    /// (default; this process only), `redis://…` or `nats://…` (see `vigia_fanout`).
    pub fanout: String,
    /// With a cross-process fan-out: how often what its control messages keep current
    /// (sensor directory, verified API keys, workers' excursions) is compared with the
    /// store, so a lost message heals; at least 1s.
    pub fanout_refresh: String,
    /// `full`: fsync before answering 202 (survives power loss); `os`: survives
    /// `kill -9` of the process but not power loss, and is faster.
    pub durability: Durability,
    /// Provision the seed-000 chambers and run the simulator against this server.
    pub demo: bool,
    /// First-start admin key of the default tenant (`VIGIA_BOOTSTRAP_TOKEN`).
    pub bootstrap_token: Option<String>,
    /// Log filter, `tracing` syntax (e.g. `info`, `vigia=debug`).
    pub log: String,
    /// How long shutdown waits for in-flight work to drain.
    pub shutdown_timeout: String,
    /// Roles of this process, comma separated (`ingest,worker,api,scheduler`), or `all`.
    pub roles: String,
    pub ingest: IngestConfig,
    pub workers: WorkersConfig,
    pub rules: RulesConfig,
    pub auth: AuthConfig,
    pub scheduler: SchedulerConfig,
    pub mqtt: MqttConfig,
    pub rollups: RollupsConfig,
    pub retention: RetentionConfig,
    pub live: LiveConfig,
    pub http: HttpConfig,
    pub objects: ObjectsConfig,
    pub prices: PricesConfig,
    pub robots: crate::robots::RobotsConfig,
}

/// Prices of products (issue 15): CSV imports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricesConfig {
    /// The largest price file `POST /api/v1/prices/import` and `vigia prices import`
    /// take, in bytes; past it, 413.
    pub max_import_bytes: usize,
}

impl Default for PricesConfig {
    fn default() -> Self {
        Self {
            max_import_bytes: vigia_services::prices::DEFAULT_MAX_IMPORT_BYTES,
        }
    }
}

/// Object storage (`vigia_objects`): the relay's offloaded datasets, files robots read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectsConfig {
    /// Empty (the default): a local directory `<data_dir>/objects`; a directory path or
    /// `file:///path`; or `s3://bucket?endpoint=…&region=…` (S3, MinIO); env
    /// `VIGIA_OBJECTS__URL`, flag `--objects`.
    pub url: String,
    /// The HMAC key of the local store's signed URLs, at least 16 bytes. Absent: a random
    /// key is made at first start in `<data_dir>/objects-signing.key` and reused, so
    /// URLs survive restarts; processes that share one local store must share the key.
    pub signing_key: Option<String>,
    /// The public URL clients reach this server at, which local signed URLs point to
    /// (`{base_url}/objects/{key}`); absent: `http://<listen address>`.
    pub base_url: Option<String>,
    /// How long a signed URL stays valid when the caller names no expiry; at most 7d.
    pub presign_expiry: String,
    /// The largest body a signed `PUT /objects/{key}` accepts (413 past it); 5 GiB, S3's
    /// limit for one PUT.
    pub max_put_bytes: u64,
}

impl Default for ObjectsConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            signing_key: None,
            base_url: None,
            presign_expiry: "15m".into(),
            max_put_bytes: 5 * 1024 * 1024 * 1024,
        }
    }
}

/// The HTTP listener's per-client limits (`vigia_web::server`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Open connections (upgraded WebSockets included); past it a new connection gets a
    /// 503 problem with `Retry-After` and is closed.
    pub max_connections: usize,
    /// How long a client may take to send a request's head; also how long an idle
    /// keep-alive connection stays open.
    pub header_read_timeout: String,
    /// The longest pause between two chunks of a request body; then 408.
    pub body_read_timeout: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_connections: 16_384,
            header_read_timeout: "30s".into(),
            body_read_timeout: "30s".into(),
        }
    }
}

/// The live feed (`/api/v1/ws`, `/api/v1/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    /// Open WebSocket and SSE streams this process serves; past it, 503 + `Retry-After`.
    pub max_subscribers: usize,
    /// Open streams of one API key; past it, 429 + `Retry-After`.
    pub max_subscribers_per_key: usize,
    /// How long one WebSocket frame may wait for a client that does not read before the
    /// stream is closed (with code 1008 and the reason when the socket still takes the
    /// close frame; a client that stopped reading usually sees a reset instead).
    pub send_timeout: String,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            max_subscribers: 10_000,
            max_subscribers_per_key: 100,
            send_timeout: "10s".into(),
        }
    }
}

/// The `rollups` scheduler job: 1-minute and 1-hour summaries of closed raw ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RollupsConfig {
    /// How often the job runs.
    pub every: String,
    /// How long after a minute ends its readings are rolled up: readings arriving later
    /// mark their buckets dirty and are recomputed on the next run.
    pub grace: String,
    /// Raw readings one roll-up step scans; the job takes steps until it is caught up.
    /// On PostgreSQL and MariaDB a step holds the watermark lock that batches wait on,
    /// so smaller steps keep ingest smooth while a backlog is rolled up.
    pub max_rows_per_step: usize,
}

impl Default for RollupsConfig {
    fn default() -> Self {
        Self {
            every: "1m".into(),
            grace: "1m".into(),
            max_rows_per_step: 50_000,
        }
    }
}

/// The `readings-retention` scheduler job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// How often the job runs.
    pub every: String,
    /// Raw readings older than this are deleted (never before they are rolled up, never
    /// those of a sensor with an open or acknowledged alert).
    pub raw: String,
    /// Rollup rows older than this are deleted (same exceptions).
    pub rollups: String,
    /// Rows one delete statement removes; the job pauses `pause` between statements so
    /// ingest never waits long on it.
    pub chunk: usize,
    /// Pause between two delete statements.
    pub pause: String,
    /// Per-tenant overrides by tenant slug, e.g. `[retention.tenants.acme] raw = "30d"`.
    pub tenants: BTreeMap<String, TenantRetention>,
}

/// A tenant's own retention; an unset field takes the global value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantRetention {
    pub raw: Option<String>,
    pub rollups: Option<String>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            every: "10m".into(),
            raw: "7d".into(),
            rollups: "365d".into(),
            chunk: 10_000,
            pause: "20ms".into(),
            tenants: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// External broker to subscribe to, `mqtt://[user[:password]@]host[:port]`; unset: off.
    pub broker: Option<String>,
    /// Tenants (slugs, comma separated) whose readings are taken from the broker's topics;
    /// the broker's ACLs decide who may publish on them.
    pub broker_tenants: String,
    /// Client id on the broker (the persistent session's name); unset:
    /// `vigia-{hostname}-{hash of the data dir}`.
    pub client_id: Option<String>,
    /// Group of the shared subscription `$share/{group}/vigia/#`.
    pub share_group: String,
    /// Keep-alive towards the broker.
    pub broker_keep_alive: String,
    /// Address of the embedded MQTT listener; unset: off.
    pub listen: Option<SocketAddr>,
    /// Open connections the embedded listener accepts.
    pub max_connections: usize,
    /// Largest MQTT packet accepted (listener and broker).
    pub max_packet_bytes: usize,
    /// Publishes of one listener connection settled together before more are read.
    pub max_inflight: usize,
    /// Longest keep-alive honoured by the listener (also the idle limit when a client
    /// asks for none).
    pub max_keep_alive: String,
    /// Time a new listener connection has to send CONNECT.
    pub connect_timeout: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            broker: None,
            broker_tenants: "default".into(),
            client_id: None,
            share_group: "vigia".into(),
            broker_keep_alive: "30s".into(),
            listen: None,
            max_connections: 1_000,
            max_packet_bytes: 256 * 1024,
            max_inflight: 64,
            max_keep_alive: "10m".into(),
            connect_timeout: "10s".into(),
        }
    }
}

impl MqttConfig {
    /// The trusted broker tenants' slugs.
    pub fn broker_tenant_slugs(&self) -> Vec<String> {
        self.broker_tenants
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// How long the scheduler's leader lease lasts without renewal (a dead leader is
    /// replaced within it); at least 1s.
    pub lease_ttl: String,
    /// How often the store's housekeeping (WAL checkpoint, stale leases) runs.
    pub housekeeping_every: String,
    /// How long audit rows are kept.
    pub audit_retention: String,
    /// How long outbox events are kept for their consumers.
    pub outbox_retention: String,
    /// When retention (audit rows, outbox events) runs (cron, UTC).
    pub retention_cron: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            lease_ttl: "30s".into(),
            housekeeping_every: "5m".into(),
            audit_retention: "90d".into(),
            outbox_retention: "7d".into(),
            retention_cron: "17 3 * * *".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Failed authentications one client address may make per second (and in a burst)
    /// before its requests get 429 until the budget refills.
    pub max_failures_per_second: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            max_failures_per_second: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest request body (bytes); larger gets 413.
    pub max_body_bytes: usize,
    /// Most readings in one request; more gets 413.
    pub max_batch_rows: usize,
    /// How far in the future a timestamp may be.
    pub max_future: String,
    /// How far in the past a timestamp may be; at most `retention.raw` (and every
    /// tenant's own), so no reading arrives already past its raw retention.
    pub max_age: String,
    /// `auto`: unknown sensors are created on first reading; `required`: refused (422).
    pub provisioning: Provisioning,
    /// Readings waiting on the bus before ingest answers 503.
    pub queue_capacity_readings: u64,
    /// The InfluxDB line protocol tag that names the sensor.
    pub line_protocol_sensor_tag: String,
    /// Ingest requests (JSON and line protocol) one API key may send per second, in a
    /// burst as well; past it 429 with `Retry-After`.
    pub max_requests_per_second_per_key: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// Concurrent workers.
    pub count: usize,
    /// Readings per batch a worker takes from the bus.
    pub batch_size: usize,
    /// With several `bus_partitions`: how long a worker process that died keeps its
    /// partitions (its leases expire); renewed every fifth of it; at least 1s.
    pub partition_lease: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Window over which rates of change are measured.
    pub rate_window: String,
    /// Shortest span a rate is computed over (never between readings ms apart).
    pub rate_min_interval: String,
    /// How long a value must stay back in range before its alert resolves itself.
    pub resolve_hold: String,
    /// How often the workers look for sensors silent past an `offline` rule's
    /// `expected + grace` (wall clock); at least 100ms.
    pub silence_sweep_every: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./vigia-data"),
            store: "sqlite".into(),
            store_max_connections: vigia_store::registry::DEFAULT_MAX_CONNECTIONS,
            store_read_url: None,
            bus: "memory".into(),
            bus_partitions: None,
            fanout: "memory".into(),
            fanout_refresh: "30s".into(),
            durability: Durability::Full,
            demo: false,
            bootstrap_token: None,
            log: "info".into(),
            shutdown_timeout: "30s".into(),
            roles: "all".into(),
            ingest: IngestConfig::default(),
            workers: WorkersConfig::default(),
            rules: RulesConfig::default(),
            auth: AuthConfig::default(),
            scheduler: SchedulerConfig::default(),
            mqtt: MqttConfig::default(),
            rollups: RollupsConfig::default(),
            retention: RetentionConfig::default(),
            live: LiveConfig::default(),
            http: HttpConfig::default(),
            objects: ObjectsConfig::default(),
            prices: PricesConfig::default(),
            robots: crate::robots::RobotsConfig::default(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            max_batch_rows: 100_000,
            max_future: "24h".into(),
            max_age: "7d".into(),
            provisioning: Provisioning::Auto,
            queue_capacity_readings: 1_000_000,
            line_protocol_sensor_tag: "sensor".into(),
            max_requests_per_second_per_key: 50_000,
        }
    }
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            // More workers than cores: while one waits on the store's group commit, others
            // evaluate, so commits carry several batches (measured by the store bench).
            count: 4,
            batch_size: 500,
            partition_lease: "10s".into(),
        }
    }
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            rate_window: "60s".into(),
            rate_min_interval: "4s".into(),
            resolve_hold: "60s".into(),
            silence_sweep_every: "1s".into(),
        }
    }
}

/// Top-level keys, so unrelated `VIGIA_*` variables (`VIGIA_TOKEN` for the clients,
/// `VIGIA_REQUIRE_SERVICES` for tests) are not mistaken for settings.
const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "store",
    "store_max_connections",
    "store_read_url",
    "bus",
    "bus_partitions",
    "fanout",
    "fanout_refresh",
    "durability",
    "demo",
    "bootstrap_token",
    "log",
    "shutdown_timeout",
    "roles",
    "ingest",
    "workers",
    "rules",
    "auth",
    "scheduler",
    "mqtt",
    "rollups",
    "retention",
    "live",
    "http",
    "objects",
    "prices",
    "robots",
];

/// Whether `VIGIA_<key>` names a setting (`key` is matched case-insensitively, nested
/// keys separated by `__` or `.`).
fn is_setting(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let top = key
        .split("__")
        .next()
        .unwrap_or("")
        .split('.')
        .next()
        .unwrap_or("");
    KEYS.contains(&top)
}

/// Command-line values that override every other source.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demo: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<ObjectsOverride>,
}

/// `--objects URL`: only the URL of `[objects]`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ObjectsOverride {
    pub url: String,
}

impl Config {
    /// Loads and validates the configuration from every source.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        // A missing .env is normal; a malformed one is worth stopping for.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => bail!("could not read .env: {e}"),
        }
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    bail!("config file {} does not exist", path.display());
                }
                figment = figment.merge(Toml::file(path));
            }
            None if Path::new("vigia.toml").exists() => {
                figment = figment.merge(Toml::file("vigia.toml"));
            }
            None => {}
        }
        figment = figment
            .merge(
                Env::prefixed("VIGIA_")
                    .split("__")
                    .filter(|key| is_setting(key.as_str())),
            )
            .merge(Serialized::defaults(overrides));
        let config: Config = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything a user can get wrong, with a message saying what to change.
    pub fn validate(&self) -> anyhow::Result<()> {
        vigia_store::StoreRegistry::builtin()
            .validate(&self.store, &self.store_context())
            .map_err(|e| anyhow::anyhow!("setting `store`: {e}"))?;
        if self.store_max_connections < 2 {
            bail!("store_max_connections must be at least 2 (one writer, one reader)");
        }
        if let Some(read_url) = &self.store_read_url {
            if !vigia_store::StoreRegistry::builtin().same_backend(read_url, &self.store) {
                bail!(
                    "store_read_url must use the same backend as `store` (`{}`), got `{read_url}`",
                    vigia_store::registry::scheme_of(&self.store)
                );
            }
        }
        crate::roles::parse(&self.roles).map_err(|e| anyhow::anyhow!("setting `roles`: {e}"))?;
        if self.millis(&self.scheduler.lease_ttl) < 1_000 {
            bail!("scheduler.lease_ttl must be at least 1s");
        }
        if self.millis(&self.scheduler.housekeeping_every) < 1_000 {
            bail!("scheduler.housekeeping_every must be at least 1s");
        }
        vigia_scheduler::Schedule::cron(self.scheduler.retention_cron.clone())
            .map_err(|e| anyhow::anyhow!("setting `scheduler.retention_cron`: {e}"))?;
        if self.auth.max_failures_per_second == 0 {
            bail!("auth.max_failures_per_second must be at least 1");
        }
        vigia_bus::validate_url(&self.bus).map_err(|e| anyhow::anyhow!("setting `bus`: {e}"))?;
        if let Some(partitions) = self.bus_partitions {
            if !(1..=vigia_bus::MAX_READINGS_PARTITIONS).contains(&partitions) {
                bail!(
                    "bus_partitions must be between 1 and {}, not {partitions}",
                    vigia_bus::MAX_READINGS_PARTITIONS
                );
            }
            if partitions > 1 && !self.shared_bus() {
                bail!(
                    "bus_partitions = {partitions} needs a bus shared by processes (redis://, \
                     nats://); the embedded bus has one partition, owned by its one process"
                );
            }
        }
        vigia_fanout::validate_url(&self.fanout)
            .map_err(|e| anyhow::anyhow!("setting `fanout`: {e}"))?;
        for (name, value) in [
            ("shutdown_timeout", &self.shutdown_timeout),
            ("fanout_refresh", &self.fanout_refresh),
            ("ingest.max_future", &self.ingest.max_future),
            ("ingest.max_age", &self.ingest.max_age),
            ("workers.partition_lease", &self.workers.partition_lease),
            ("rules.rate_window", &self.rules.rate_window),
            ("rules.rate_min_interval", &self.rules.rate_min_interval),
            ("rules.resolve_hold", &self.rules.resolve_hold),
            ("rules.silence_sweep_every", &self.rules.silence_sweep_every),
            ("scheduler.lease_ttl", &self.scheduler.lease_ttl),
            (
                "scheduler.housekeeping_every",
                &self.scheduler.housekeeping_every,
            ),
            ("scheduler.audit_retention", &self.scheduler.audit_retention),
            (
                "scheduler.outbox_retention",
                &self.scheduler.outbox_retention,
            ),
            ("mqtt.broker_keep_alive", &self.mqtt.broker_keep_alive),
            ("mqtt.max_keep_alive", &self.mqtt.max_keep_alive),
            ("mqtt.connect_timeout", &self.mqtt.connect_timeout),
            ("rollups.every", &self.rollups.every),
            ("rollups.grace", &self.rollups.grace),
            ("retention.every", &self.retention.every),
            ("retention.raw", &self.retention.raw),
            ("retention.rollups", &self.retention.rollups),
            ("retention.pause", &self.retention.pause),
            ("live.send_timeout", &self.live.send_timeout),
            ("http.header_read_timeout", &self.http.header_read_timeout),
            ("http.body_read_timeout", &self.http.body_read_timeout),
            ("objects.presign_expiry", &self.objects.presign_expiry),
        ] {
            parse_duration_ms(value).map_err(|e| anyhow::anyhow!("setting `{name}`: {e}"))?;
        }
        if self.millis(&self.fanout_refresh) < 1_000 {
            bail!("fanout_refresh must be at least 1s");
        }
        if self.millis(&self.workers.partition_lease) < 1_000 {
            bail!("workers.partition_lease must be at least 1s");
        }
        if !(1024..=256 * 1024 * 1024).contains(&self.prices.max_import_bytes) {
            bail!("prices.max_import_bytes must be between 1024 and 268435456");
        }
        if self.ingest.max_body_bytes < 1024 {
            bail!("ingest.max_body_bytes must be at least 1024");
        }
        if self.ingest.max_requests_per_second_per_key == 0 {
            bail!("ingest.max_requests_per_second_per_key must be at least 1");
        }
        if self.ingest.max_batch_rows == 0 {
            bail!("ingest.max_batch_rows must be at least 1");
        }
        let tag = &self.ingest.line_protocol_sensor_tag;
        if tag.is_empty() || tag.len() > 128 || tag.chars().any(|c| c.is_control()) {
            bail!("ingest.line_protocol_sensor_tag must be 1 to 128 characters without control characters");
        }
        if self.ingest.queue_capacity_readings < self.ingest.max_batch_rows as u64 {
            bail!("ingest.queue_capacity_readings must be at least ingest.max_batch_rows");
        }
        if self.workers.count == 0 || self.workers.count > 64 {
            bail!("workers.count must be between 1 and 64");
        }
        if self.workers.batch_size == 0 {
            bail!("workers.batch_size must be at least 1");
        }
        if self.millis(&self.rules.silence_sweep_every) < 100 {
            bail!("rules.silence_sweep_every must be at least 100ms");
        }
        if self.millis(&self.rules.rate_min_interval) > self.millis(&self.rules.rate_window) {
            bail!("rules.rate_min_interval must not exceed rules.rate_window");
        }
        self.validate_mqtt()?;
        self.validate_live()?;
        self.validate_objects()?;
        self.robots.validate()?;
        self.validate_rollups_and_retention()
    }

    /// Whether the bus is shared by processes (anything but the in-process backends).
    fn shared_bus(&self) -> bool {
        vigia_bus::BusUrl::parse(&self.bus)
            .is_ok_and(|url| !matches!(url.scheme(), "memory" | "embedded" | "volatile"))
    }

    /// Readings partitions in use: `bus_partitions`, or its default for the bus.
    pub fn readings_partitions(&self) -> usize {
        self.bus_partitions
            .unwrap_or(if self.shared_bus() { 8 } else { 1 })
    }

    fn validate_objects(&self) -> anyhow::Result<()> {
        let objects = &self.objects;
        vigia_objects::ObjectsRegistry::builtin()
            .validate(&objects.url, &self.objects_context())
            .map_err(|e| anyhow::anyhow!("setting `objects.url`: {e}"))?;
        let expiry = self.millis(&objects.presign_expiry);
        if expiry < 1_000 || expiry as u128 > vigia_objects::MAX_PRESIGN_EXPIRY.as_millis() {
            bail!("objects.presign_expiry must be between 1s and 7d");
        }
        if let Some(key) = &objects.signing_key {
            if key.len() < vigia_objects::signing::MIN_SIGNING_KEY_BYTES {
                bail!(
                    "objects.signing_key must be at least {} bytes",
                    vigia_objects::signing::MIN_SIGNING_KEY_BYTES
                );
            }
        }
        if let Some(base) = &objects.base_url {
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                bail!("objects.base_url must start with http:// or https://, not `{base}`");
            }
        }
        if objects.max_put_bytes == 0 {
            bail!("objects.max_put_bytes must be at least 1");
        }
        Ok(())
    }

    /// What opening the object store needs (signing is added once the key and the
    /// server's address are known).
    pub fn objects_context(&self) -> vigia_objects::OpenContext {
        let mut ctx = vigia_objects::OpenContext::new(&self.data_dir);
        ctx.presign_expiry = std::time::Duration::from_millis(
            self.millis(&self.objects.presign_expiry).max(0) as u64,
        );
        ctx
    }

    fn validate_live(&self) -> anyhow::Result<()> {
        let live = &self.live;
        if live.max_subscribers == 0 || live.max_subscribers_per_key == 0 {
            bail!("live.max_subscribers and live.max_subscribers_per_key must be at least 1");
        }
        if live.max_subscribers_per_key > live.max_subscribers {
            bail!("live.max_subscribers_per_key must not exceed live.max_subscribers");
        }
        if self.millis(&live.send_timeout) < 100 {
            bail!("live.send_timeout must be at least 100ms");
        }
        let http = &self.http;
        if http.max_connections == 0 {
            bail!("http.max_connections must be at least 1");
        }
        if self.millis(&http.header_read_timeout) < 100
            || self.millis(&http.body_read_timeout) < 100
        {
            bail!("http.header_read_timeout and http.body_read_timeout must be at least 100ms");
        }
        Ok(())
    }

    fn validate_rollups_and_retention(&self) -> anyhow::Result<()> {
        if self.millis(&self.rollups.every) < 1_000 {
            bail!("rollups.every must be at least 1s");
        }
        if self.millis(&self.rollups.grace) < 0 {
            bail!("rollups.grace must not be negative");
        }
        if self.rollups.max_rows_per_step < 1_000 {
            bail!("rollups.max_rows_per_step must be at least 1000");
        }
        if self.millis(&self.retention.every) < 1_000 {
            bail!("retention.every must be at least 1s");
        }
        if self.retention.chunk == 0 {
            bail!("retention.chunk must be at least 1");
        }
        let check = |name: &str, raw: &str, rollups: &str| -> anyhow::Result<()> {
            for (key, value) in [("raw", raw), ("rollups", rollups)] {
                let ms = parse_duration_ms(value)
                    .map_err(|e| anyhow::anyhow!("setting `{name}.{key}`: {e}"))?;
                // Raw readings must outlive the roll-up that summarises them.
                if ms < 3_600_000 {
                    bail!("{name}.{key} must be at least 1h");
                }
            }
            if self.millis(rollups) < self.millis(raw) {
                bail!("{name}.rollups must not be shorter than {name}.raw");
            }
            Ok(())
        };
        let max_age = self.millis(&self.ingest.max_age);
        if max_age < 60_000 {
            bail!("ingest.max_age must be at least 1m");
        }
        check("retention", &self.retention.raw, &self.retention.rollups)?;
        if max_age > self.millis(&self.retention.raw) {
            bail!("ingest.max_age must not exceed retention.raw: older readings would be deleted on arrival");
        }
        for (slug, own) in &self.retention.tenants {
            let raw = own.raw.as_deref().unwrap_or(&self.retention.raw);
            let rollups = own.rollups.as_deref().unwrap_or(&self.retention.rollups);
            let name = format!("retention.tenants.{slug}");
            check(&name, raw, rollups)?;
            if max_age > self.millis(raw) {
                bail!("ingest.max_age must not exceed {name}.raw: older readings would be deleted on arrival");
            }
        }
        Ok(())
    }

    /// Raw and rollup retention of a tenant (by slug), overrides applied.
    pub fn retention_of(&self, slug: &str) -> (Duration, Duration) {
        let own = self.retention.tenants.get(slug);
        let raw = own
            .and_then(|t| t.raw.as_deref())
            .unwrap_or(&self.retention.raw);
        let rollups = own
            .and_then(|t| t.rollups.as_deref())
            .unwrap_or(&self.retention.rollups);
        (self.duration(raw), self.duration(rollups))
    }

    fn validate_mqtt(&self) -> anyhow::Result<()> {
        let mqtt = &self.mqtt;
        if let Some(url) = &mqtt.broker {
            vigia_mqtt::broker::parse_broker_url(url)
                .map_err(|e| anyhow::anyhow!("setting `mqtt.broker`: {e}"))?;
            if mqtt.broker_tenant_slugs().is_empty() {
                bail!("mqtt.broker_tenants must name at least one tenant when mqtt.broker is set");
            }
        }
        if let Some(id) = &mqtt.client_id {
            if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()) {
                bail!("mqtt.client_id must be 1 to 128 bytes without control characters");
            }
        }
        if mqtt.share_group.is_empty()
            || mqtt.share_group.contains(['/', '+', '#'])
            || mqtt.share_group.chars().any(char::is_control)
        {
            bail!(
                "mqtt.share_group must be non-empty, without `/`, `+`, `#` or control characters"
            );
        }
        if self.millis(&mqtt.broker_keep_alive) < 5_000 {
            bail!("mqtt.broker_keep_alive must be at least 5s");
        }
        if mqtt.max_connections == 0 {
            bail!("mqtt.max_connections must be at least 1");
        }
        if mqtt.max_packet_bytes < 1024 || mqtt.max_packet_bytes > 256 * 1024 * 1024 {
            bail!("mqtt.max_packet_bytes must be between 1024 and 268435456 (MQTT's limit)");
        }
        if mqtt.max_inflight == 0 || mqtt.max_inflight > 65_535 {
            bail!("mqtt.max_inflight must be between 1 and 65535");
        }
        if self.millis(&mqtt.max_keep_alive) < 1_000 {
            bail!("mqtt.max_keep_alive must be at least 1s");
        }
        if self.millis(&mqtt.connect_timeout) < 100 {
            bail!("mqtt.connect_timeout must be at least 100ms");
        }
        if mqtt
            .listen
            .is_some_and(|a| a.port() != 0 && a == self.listen)
        {
            bail!("mqtt.listen must differ from listen (the HTTP address)");
        }
        Ok(())
    }

    /// What the store registry needs besides the URL.
    pub fn store_context(&self) -> vigia_store::OpenContext {
        vigia_store::OpenContext {
            durability: self.durability,
            max_connections: self.store_max_connections,
            read_url: self.store_read_url.clone(),
            ..vigia_store::OpenContext::new(&self.data_dir)
        }
    }

    /// A validated duration setting in milliseconds.
    pub fn millis(&self, value: &str) -> i64 {
        parse_duration_ms(value).unwrap_or(0)
    }

    pub fn duration(&self, value: &str) -> Duration {
        Duration::from_millis(self.millis(value).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    type Change = Box<dyn Fn(&mut Config)>;

    #[test]
    fn bad_settings_say_what_to_change() {
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|c| c.store = "nosuchdb://x".into()),
                "store `nosuchdb` is not available in this build; supported: `sqlite`",
            ),
            (
                Box::new(|c| c.roles = "ingest,cook".into()),
                "unknown role `cook`",
            ),
            (
                Box::new(|c| c.auth.max_failures_per_second = 0),
                "auth.max_failures_per_second",
            ),
            (Box::new(|c| c.bus = "kafka".into()), "bus `kafka`"),
            (
                Box::new(|c| c.fanout = "kafka://broker".into()),
                "setting `fanout`: fan-out `kafka://broker`: unknown scheme",
            ),
            (
                Box::new(|c| c.fanout = "redis://cache?group=w".into()),
                "unknown query parameter `group`",
            ),
            (
                Box::new(|c| c.fanout_refresh = "500ms".into()),
                "fanout_refresh must be at least 1s",
            ),
            (
                Box::new(|c| c.fanout_refresh = "often".into()),
                "setting `fanout_refresh`",
            ),
            (
                Box::new(|c| c.rules.resolve_hold = "soon".into()),
                "rules.resolve_hold",
            ),
            (Box::new(|c| c.workers.count = 0), "workers.count"),
            (
                Box::new(|c| c.bus_partitions = Some(4)),
                "bus_partitions = 4 needs a bus shared by processes",
            ),
            (
                Box::new(|c| {
                    c.bus = "redis://127.0.0.1:6379".into();
                    c.bus_partitions = Some(17);
                }),
                "bus_partitions must be between 1 and 16",
            ),
            (
                Box::new(|c| c.workers.partition_lease = "500ms".into()),
                "workers.partition_lease must be at least 1s",
            ),
            (
                Box::new(|c| c.scheduler.retention_cron = "61 * * * *".into()),
                "scheduler.retention_cron",
            ),
            (
                Box::new(|c| c.scheduler.lease_ttl = "10ms".into()),
                "scheduler.lease_ttl",
            ),
            (
                Box::new(|c| c.rules.rate_min_interval = "2m".into()),
                "rate_min_interval",
            ),
            (
                Box::new(|c| c.mqtt.broker = Some("mqtts://broker".into())),
                "mqtt.broker",
            ),
            (
                Box::new(|c| {
                    c.mqtt.broker = Some("mqtt://127.0.0.1:1883".into());
                    c.mqtt.broker_tenants = " , ".into();
                }),
                "mqtt.broker_tenants",
            ),
            (
                Box::new(|c| c.mqtt.share_group = "a/b".into()),
                "mqtt.share_group",
            ),
            (
                Box::new(|c| c.mqtt.max_connections = 0),
                "mqtt.max_connections",
            ),
            (
                Box::new(|c| c.mqtt.max_packet_bytes = 10),
                "mqtt.max_packet_bytes",
            ),
            (Box::new(|c| c.mqtt.max_inflight = 0), "mqtt.max_inflight"),
            (
                Box::new(|c| c.mqtt.connect_timeout = "soon".into()),
                "mqtt.connect_timeout",
            ),
            (Box::new(|c| c.rollups.every = "0s".into()), "rollups.every"),
            (
                Box::new(|c| c.rollups.max_rows_per_step = 10),
                "rollups.max_rows_per_step",
            ),
            (Box::new(|c| c.retention.raw = "5m".into()), "retention.raw"),
            (
                Box::new(|c| c.retention.rollups = "1d".into()),
                "retention.rollups must not be shorter",
            ),
            (Box::new(|c| c.retention.chunk = 0), "retention.chunk"),
            (
                Box::new(|c| c.live.max_subscribers_per_key = 20_000),
                "live.max_subscribers_per_key",
            ),
            (
                Box::new(|c| c.http.max_connections = 0),
                "http.max_connections",
            ),
            (
                Box::new(|c| c.http.body_read_timeout = "10ms".into()),
                "http.body_read_timeout",
            ),
            (
                Box::new(|c| c.http.header_read_timeout = "later".into()),
                "http.header_read_timeout",
            ),
            (
                Box::new(|c| c.ingest.max_age = "30d".into()),
                "ingest.max_age must not exceed retention.raw",
            ),
            (
                Box::new(|c| {
                    c.retention.tenants.insert(
                        "acme".into(),
                        TenantRetention {
                            raw: Some("forever".into()),
                            rollups: None,
                        },
                    );
                }),
                "retention.tenants.acme.raw",
            ),
        ];
        for (change, needle) in cases {
            let mut c = Config::default();
            change(&mut c);
            let err = format!("{:#}", c.validate().unwrap_err());
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn a_tenant_override_replaces_only_what_it_sets() {
        let mut c = Config::default();
        c.retention.tenants.insert(
            "acme".into(),
            TenantRetention {
                raw: Some("30d".into()),
                rollups: None,
            },
        );
        c.validate().unwrap();
        let day = Duration::from_secs(86_400);
        assert_eq!(c.retention_of("acme"), (30 * day, 365 * day));
        assert_eq!(c.retention_of("other"), (7 * day, 365 * day));
    }

    #[test]
    fn only_setting_variables_are_read() {
        for key in [
            "BOOTSTRAP_TOKEN",
            "bootstrap_token",
            "INGEST__MAX_BODY_BYTES",
            "ingest.max_body_bytes",
            "LISTEN",
            "FANOUT",
            "FANOUT_REFRESH",
        ] {
            assert!(is_setting(key), "{key}");
        }
        for key in ["TOKEN", "REQUIRE_SERVICES", "LISTENER", "INGESTION__X"] {
            assert!(!is_setting(key), "{key}");
        }
    }

    #[test]
    fn store_urls_are_checked_by_the_registry() {
        for url in ["sqlite", "sqlite:///tmp/x.sqlite3", "volatile://"] {
            let c = Config {
                store: url.into(),
                ..Config::default()
            };
            c.validate().unwrap_or_else(|e| panic!("{url}: {e:#}"));
        }
    }

    #[test]
    fn a_replica_may_use_the_other_alias_of_its_backend() {
        let config = |store: &str, read: &str| Config {
            store: store.into(),
            store_read_url: Some(read.into()),
            ..Config::default()
        };
        config("mysql://root@h/db", "mariadb://root@replica/db")
            .validate()
            .unwrap();
        config("postgresql://h/db", "postgres://replica/db")
            .validate()
            .unwrap();
        let err = config("postgres://h/db", "mysql://root@h/db")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("store_read_url"), "{err}");
    }
}
