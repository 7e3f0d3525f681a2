//! The Redis bus URLs: `redis://…` (one server) and `redis+cluster://…` (Redis
//! Cluster), with the query parameters the module documentation lists.

use std::time::Duration;

/// The scheme of a single Redis server.
pub(crate) const SCHEME: &str = "redis";
/// The scheme of a Redis Cluster (several seed nodes, comma-separated).
pub(crate) const CLUSTER_SCHEME: &str = "redis+cluster";
/// TLS schemes this build refuses with a clear message.
pub(crate) const TLS_SCHEMES: [&str; 2] = ["rediss", "rediss+cluster"];

const DEFAULT_PORT: u16 = 6379;
/// Default [`RedisConfig::prefix`].
pub const DEFAULT_PREFIX: &str = "vigia";
/// Default [`RedisConfig::group`].
pub const DEFAULT_GROUP: &str = "vigia";
/// Default [`RedisConfig::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_TIMEOUT_MS: u64 = 600_000;
const MAX_NAME: usize = 64;

/// The query parameters a Redis bus URL may carry.
const PARAMETERS: [&str; 4] = ["prefix", "group", "consumer", "timeout_ms"];

/// What a Redis bus URL says, checked: where the server(s) are and how the bus names its
/// keys, group and consumer.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Redis Cluster (`redis+cluster://`) rather than one server.
    pub cluster: bool,
    /// One connection URL per node for the `redis` client (`redis://[user:pass@]host:port/db`);
    /// exactly one unless `cluster`.
    pub nodes: Vec<String>,
    /// `host:port` of each node, for logs (no credentials).
    pub addresses: Vec<String>,
    /// Every key starts with `{<prefix>:` (query `prefix`, default `vigia`).
    pub prefix: String,
    /// The consumer group of every topic's stream (query `group`, default `vigia`).
    pub group: String,
    /// This handle's consumer name in the group (query `consumer`); `None` makes a unique
    /// one per handle.
    pub consumer: Option<String>,
    /// Connect and command timeout (query `timeout_ms`, default 2000).
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    // By hand so that a password in `nodes` never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("cluster", &self.cluster)
            .field("addresses", &self.addresses)
            .field("prefix", &self.prefix)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisConfig {
    /// Parses a whole bus URL (`redis://…` or `redis+cluster://…`); the error says what
    /// is wrong in words a person can act on.
    pub fn parse(url: &str) -> Result<Self, String> {
        let trimmed = url.trim();
        let Some((scheme, rest)) = trimmed.split_once("://") else {
            return Err("expected `redis://HOST[:PORT][/DB][?…]` or `redis+cluster://HOST:PORT,HOST:PORT,…[?…]`".into());
        };
        Self::parse_parts(&scheme.to_ascii_lowercase(), rest)
    }

    /// Parses what follows `scheme://`.
    pub(crate) fn parse_parts(scheme: &str, rest: &str) -> Result<Self, String> {
        let cluster = match scheme {
            SCHEME => false,
            CLUSTER_SCHEME => true,
            s if TLS_SCHEMES.contains(&s) => {
                return Err(format!(
                    "`{s}://` (Redis over TLS) is not supported by this build; use `redis://` \
                     or `redis+cluster://` on a trusted network, or a TLS tunnel to Redis"
                ))
            }
            other => return Err(format!("`{other}://` is not a Redis bus URL")),
        };
        let (before_query, query) = match rest.split_once('?') {
            Some((before, query)) => (before, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let db = parse_db(path, cluster)?;
        let addresses = hosts
            .split(',')
            .map(parse_host)
            .collect::<Result<Vec<_>, _>>()?;
        if !cluster && addresses.len() != 1 {
            return Err(format!(
                "`redis://` names one server; for several seed nodes of a Redis Cluster write \
                 `redis+cluster://{hosts}`"
            ));
        }
        let credentials = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let nodes = addresses
            .iter()
            .map(|address| format!("redis://{credentials}{address}/{db}"))
            .collect();
        let mut config = RedisConfig {
            cluster,
            nodes,
            addresses,
            prefix: DEFAULT_PREFIX.into(),
            group: DEFAULT_GROUP.into(),
            consumer: None,
            timeout: DEFAULT_TIMEOUT,
        };
        if let Some(query) = query {
            config.apply_query(query)?;
        }
        Ok(config)
    }

    fn apply_query(&mut self, query: &str) -> Result<(), String> {
        let mut seen: Vec<&str> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(&known) = PARAMETERS.iter().find(|k| **k == key) else {
                return Err(format!(
                    "unknown query parameter `{key}`; known: {}",
                    PARAMETERS.join(", ")
                ));
            };
            if seen.contains(&known) {
                return Err(format!("query parameter `{key}` is given twice"));
            }
            seen.push(known);
            let value = percent_decode(raw).ok_or_else(|| format!("`{key}`: bad %-escape"))?;
            match known {
                "prefix" => self.prefix = name(key, &value)?,
                "group" => self.group = name(key, &value)?,
                "consumer" => self.consumer = Some(name(key, &value)?),
                "timeout_ms" => {
                    let ms = value
                        .parse::<u64>()
                        .ok()
                        .filter(|ms| (1..=MAX_TIMEOUT_MS).contains(ms))
                        .ok_or_else(|| {
                            format!("`timeout_ms` must be a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS}, not `{value}`")
                        })?;
                    self.timeout = Duration::from_millis(ms);
                }
                _ => unreachable!("every known parameter is handled"),
            }
        }
        Ok(())
    }
}

fn parse_db(path: &str, cluster: bool) -> Result<u32, String> {
    if path.is_empty() {
        return Ok(0);
    }
    let db = path
        .parse::<u32>()
        .map_err(|_| format!("the path is the database number (`/0`), not `/{path}`"))?;
    if cluster && db != 0 {
        return Err("Redis Cluster has only database 0; drop the `/DB` path".into());
    }
    Ok(db)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, returned as `host:port`.
fn parse_host(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("name a host: `redis://HOST[:PORT]` (e.g. `redis://127.0.0.1:6379`)".into());
    }
    let (host, port) = if let Some(v6) = raw.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{raw}`: unclosed `[` in an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("`{raw}`: expected `:PORT` after `]`"))?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        match raw.split_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (raw.to_string(), None),
        }
    };
    let plain = host.trim_start_matches('[').trim_end_matches(']');
    if plain.is_empty()
        || !plain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))
    {
        return Err(format!("`{raw}` is not a host name or address"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{raw}`: the port must be a number from 1 to 65535"))?,
    };
    Ok(format!("{host}:{port}"))
}

/// A prefix, group or consumer name: short, and of characters that need no quoting in
/// keys or logs (and no `{}`, which would break the hash tags).
fn name(key: &str, value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c));
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "`{key}` must be 1 to {MAX_NAME} letters, digits or `-._:`, not `{value}`"
        ))
    }
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_server_urls_and_their_defaults() {
        let c = RedisConfig::parse("redis://127.0.0.1:6379/0").unwrap();
        assert!(!c.cluster);
        assert_eq!(c.nodes, ["redis://127.0.0.1:6379/0"]);
        assert_eq!(c.addresses, ["127.0.0.1:6379"]);
        assert_eq!(
            (c.prefix.as_str(), c.group.as_str(), c.consumer.as_deref()),
            ("vigia", "vigia", None)
        );
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);

        let c = RedisConfig::parse(
            "REDIS://user:p%40ss@redis.internal/3?prefix=t-1&group=workers&consumer=w:7&timeout_ms=500",
        )
        .unwrap();
        assert_eq!(c.nodes, ["redis://user:p%40ss@redis.internal:6379/3"]);
        assert_eq!(c.addresses, ["redis.internal:6379"]);
        assert_eq!(
            (c.prefix.as_str(), c.group.as_str(), c.consumer.as_deref()),
            ("t-1", "workers", Some("w:7"))
        );
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert!(
            !format!("{c:?}").contains("p%40ss"),
            "no password in Debug: {c:?}"
        );

        let c = RedisConfig::parse("redis://[::1]:7000").unwrap();
        assert_eq!(c.nodes, ["redis://[::1]:7000/0"]);
    }

    #[test]
    fn cluster_urls_list_their_seed_nodes() {
        let c =
            RedisConfig::parse("redis+cluster://10.0.0.1:7000,10.0.0.2,h3:7002?prefix=p").unwrap();
        assert!(c.cluster);
        assert_eq!(
            c.nodes,
            [
                "redis://10.0.0.1:7000/0",
                "redis://10.0.0.2:6379/0",
                "redis://h3:7002/0"
            ]
        );
        assert_eq!(c.prefix, "p");
        RedisConfig::parse("redis+cluster://a:1/0").unwrap();
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        // (url, words the error must contain)
        let cases: &[(&str, &[&str])] = &[
            ("rediss://h", &["TLS", "not supported"]),
            ("rediss+cluster://h", &["TLS"]),
            ("redis://", &["name a host"]),
            ("redis://a,b", &["redis+cluster://a,b"]),
            ("redis://h:0", &["port"]),
            ("redis://h:x", &["port"]),
            ("redis://h/x", &["database number"]),
            ("redis+cluster://h/1", &["only database 0"]),
            (
                "redis://h?db=1",
                &["unknown query parameter `db`", "prefix, group"],
            ),
            ("redis://h?prefix=a&prefix=b", &["twice"]),
            ("redis://h?prefix={x}", &["`prefix` must be"]),
            ("redis://h?prefix=", &["`prefix` must be"]),
            ("redis://h?timeout_ms=0", &["timeout_ms"]),
            ("redis://h?consumer=%zz", &["%-escape"]),
            ("redis://bad host", &["not a host"]),
            ("redis://[::1", &["unclosed"]),
            ("h:6379", &["expected `redis://"]),
        ];
        for (url, words) in cases {
            let message = RedisConfig::parse(url).expect_err(url);
            for word in *words {
                assert!(message.contains(word), "{url}: {message}");
            }
        }
    }
}
