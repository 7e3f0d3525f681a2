//! The NATS bus URL: `nats://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]…][/][?PARAMS]`, with
//! the query parameters the module documentation lists.

use std::time::Duration;

/// The scheme of a NATS server or cluster.
pub(crate) const SCHEME: &str = "nats";

const DEFAULT_PORT: u16 = 4222;
/// Default [`NatsConfig::stream_prefix`].
pub const DEFAULT_STREAM_PREFIX: &str = "vigia";
/// Default [`NatsConfig::group`].
pub const DEFAULT_GROUP: &str = "vigia";
/// Default [`NatsConfig::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default [`NatsConfig::max_ack_pending`].
pub const DEFAULT_MAX_ACK_PENDING: i64 = 10_000;
const MAX_TIMEOUT_MS: u64 = 600_000;
const MAX_NAME: usize = 64;
/// JetStream clusters replicate a stream on at most five servers.
const MAX_REPLICAS: usize = 5;

/// The query parameters a NATS bus URL may carry.
const PARAMETERS: [&str; 6] = [
    "stream_prefix",
    "group",
    "timeout_ms",
    "replicas",
    "max_bytes",
    "max_ack_pending",
];

/// What a NATS bus URL says, checked: where the servers are, the credentials, and how
/// the bus names and sizes its streams and consumers.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// `host:port` of each server to try (no credentials; for the client and for logs).
    pub servers: Vec<String>,
    /// `USER:PASSWORD@` of the URL, %-decoded.
    pub credentials: Option<(String, String)>,
    /// Streams are `<prefix>_<topic>`, subjects `<prefix>.<topic>.<weight>` (query
    /// `stream_prefix`, default `vigia`); buses with different prefixes are independent.
    pub stream_prefix: String,
    /// The durable pull consumer of every topic's stream (query `group`, default `vigia`).
    pub group: String,
    /// Connect timeout, and the longest any request may take before the operation
    /// answers `Unavailable` (query `timeout_ms`, default 2000).
    pub timeout: Duration,
    /// Servers each stream is replicated on, when the bus creates it (query `replicas`,
    /// default 1).
    pub replicas: usize,
    /// Bytes each topic's stream may hold before publishes answer `Full` (query
    /// `max_bytes`); `None` bounds streams by the capacity (lag) alone.
    pub max_bytes: Option<i64>,
    /// Deliveries the group may hold unacked at once, all its handles together (query
    /// `max_ack_pending`, default 10000).
    pub max_ack_pending: i64,
}

impl std::fmt::Debug for NatsConfig {
    // By hand so that a password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("servers", &self.servers)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("stream_prefix", &self.stream_prefix)
            .field("group", &self.group)
            .field("timeout", &self.timeout)
            .field("replicas", &self.replicas)
            .field("max_bytes", &self.max_bytes)
            .field("max_ack_pending", &self.max_ack_pending)
            .finish()
    }
}

impl NatsConfig {
    /// Parses a whole bus URL (`nats://…`); the error says what is wrong in words a
    /// person can act on.
    pub fn parse(url: &str) -> Result<Self, String> {
        let trimmed = url.trim();
        let Some((scheme, rest)) = trimmed.split_once("://") else {
            return Err("expected `nats://HOST[:PORT][,HOST[:PORT]…][?…]`".into());
        };
        Self::parse_parts(&scheme.to_ascii_lowercase(), rest)
    }

    /// Parses what follows `scheme://`.
    pub(crate) fn parse_parts(scheme: &str, rest: &str) -> Result<Self, String> {
        if scheme != SCHEME {
            return Err(format!("`{scheme}://` is not a NATS bus URL"));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((before, query)) => (before, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
        if !path.is_empty() {
            return Err(format!(
                "a NATS bus URL has no path (`/{path}`); name streams with `?stream_prefix=…`"
            ));
        }
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let credentials = userinfo.map(parse_credentials).transpose()?;
        let servers = hosts
            .split(',')
            .map(parse_host)
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = NatsConfig {
            servers,
            credentials,
            stream_prefix: DEFAULT_STREAM_PREFIX.into(),
            group: DEFAULT_GROUP.into(),
            timeout: DEFAULT_TIMEOUT,
            replicas: 1,
            max_bytes: None,
            max_ack_pending: DEFAULT_MAX_ACK_PENDING,
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
                "stream_prefix" => self.stream_prefix = name(key, &value)?,
                "group" => self.group = name(key, &value)?,
                "timeout_ms" => {
                    let ms = number(key, &value, 1, MAX_TIMEOUT_MS, "milliseconds")?;
                    self.timeout = Duration::from_millis(ms);
                }
                "replicas" => {
                    self.replicas = number(key, &value, 1, MAX_REPLICAS as u64, "servers")? as usize
                }
                "max_bytes" => {
                    self.max_bytes = Some(number(key, &value, 1, i64::MAX as u64, "bytes")? as i64)
                }
                "max_ack_pending" => {
                    self.max_ack_pending =
                        number(key, &value, 1, i64::MAX as u64, "deliveries")? as i64
                }
                _ => unreachable!("every known parameter is handled"),
            }
        }
        Ok(())
    }
}

fn number(key: &str, value: &str, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            format!("`{key}` must be a whole number of {unit} from {min} to {max}, not `{value}`")
        })
}

fn parse_credentials(userinfo: &str) -> Result<(String, String), String> {
    let (user, password) = userinfo.split_once(':').ok_or_else(|| {
        "credentials go as `USER:PASSWORD@` (a bare `USER@` token is not supported)".to_string()
    })?;
    let decode = |part: &str, what: &str| {
        percent_decode_strict(part).ok_or_else(|| format!("the {what} has a bad %-escape"))
    };
    let user = decode(user, "user name")?;
    if user.is_empty() {
        return Err("the user name before `:` is empty".into());
    }
    Ok((user, decode(password, "password")?))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, returned as `host:port`.
fn parse_host(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("name a server: `nats://HOST[:PORT]` (e.g. `nats://127.0.0.1:4222`)".into());
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

/// A stream prefix or group name: short, and of characters valid both in a JetStream
/// stream or consumer name and as one subject token (no `.`, `*`, `>` or spaces).
fn name(key: &str, value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "`{key}` must be 1 to {MAX_NAME} letters, digits, `-` or `_`, not `{value}`"
        ))
    }
}

/// %-decoding for query values (`+` is a space, as in forms).
fn percent_decode(raw: &str) -> Option<String> {
    decode(raw, true)
}

/// %-decoding for the user and password (`+` is itself).
fn percent_decode_strict(raw: &str) -> Option<String> {
    decode(raw, false)
}

fn decode(raw: &str, plus_is_space: bool) -> Option<String> {
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
            b'+' if plus_is_space => {
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
    fn urls_and_their_defaults() {
        let c = NatsConfig::parse("nats://127.0.0.1:4222").unwrap();
        assert_eq!(c.servers, ["127.0.0.1:4222"]);
        assert_eq!(c.credentials, None);
        assert_eq!(
            (c.stream_prefix.as_str(), c.group.as_str()),
            ("vigia", "vigia")
        );
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!((c.replicas, c.max_bytes), (1, None));
        assert_eq!(c.max_ack_pending, DEFAULT_MAX_ACK_PENDING);

        let c = NatsConfig::parse(
            "NATS://ingest:p%40ss+1@n1,n2:4223,[::1]/?stream_prefix=plant_7&group=workers\
             &timeout_ms=500&replicas=3&max_bytes=1073741824&max_ack_pending=64",
        )
        .unwrap();
        assert_eq!(c.servers, ["n1:4222", "n2:4223", "[::1]:4222"]);
        assert_eq!(
            c.credentials,
            Some(("ingest".to_string(), "p@ss+1".to_string()))
        );
        assert_eq!(
            (c.stream_prefix.as_str(), c.group.as_str()),
            ("plant_7", "workers")
        );
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert_eq!((c.replicas, c.max_bytes), (3, Some(1 << 30)));
        assert_eq!(c.max_ack_pending, 64);
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("p@ss") && debug.contains("ingest"),
            "no password in Debug: {debug}"
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        // (url, words the error must contain)
        let cases: &[(&str, &[&str])] = &[
            ("nats://", &["name a server"]),
            ("nats://a,,b", &["name a server"]),
            ("nats://h:0", &["port"]),
            ("nats://h:x", &["port"]),
            ("nats://h/streams", &["no path", "stream_prefix"]),
            ("nats://tok@h", &["USER:PASSWORD@"]),
            ("nats://:pw@h", &["user name", "empty"]),
            ("nats://u:%zz@h", &["password", "%-escape"]),
            (
                "nats://h?prefix=x",
                &["unknown query parameter `prefix`", "stream_prefix, group"],
            ),
            ("nats://h?group=a&group=b", &["twice"]),
            ("nats://h?stream_prefix=a.b", &["`stream_prefix` must be"]),
            ("nats://h?stream_prefix=", &["`stream_prefix` must be"]),
            ("nats://h?group=*", &["`group` must be"]),
            ("nats://h?timeout_ms=0", &["timeout_ms"]),
            ("nats://h?replicas=6", &["`replicas`", "from 1 to 5"]),
            ("nats://h?max_bytes=0", &["`max_bytes`"]),
            ("nats://h?max_ack_pending=-1", &["`max_ack_pending`"]),
            ("nats://bad host", &["not a host"]),
            ("nats://[::1", &["unclosed"]),
            ("h:4222", &["expected `nats://"]),
            ("redis://h", &["not a NATS bus URL"]),
        ];
        for (url, words) in cases {
            let message = NatsConfig::parse(url).expect_err(url);
            for word in *words {
                assert!(message.contains(word), "{url}: {message}");
            }
        }
    }
}
