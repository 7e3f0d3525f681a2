//! Connections to one Redis server or to a Redis Cluster behind one type, and the
//! mapping of their failures to [`BusError::Unavailable`].

use std::future::Future;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use ::redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::url::RedisConfig;
use crate::BusError;

/// A reconnecting, multiplexed connection: [`ConnectionManager`] to one server, or a
/// [`ClusterConnection`] (which routes each command by its key's slot). Cloning shares
/// the connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects to `config`'s server(s). Commands time out after `config.timeout` plus
    /// `extra` (the blocking reads' `BLOCK` time). A failed reconnect is not retried
    /// with back-off inside the client: the command that needed it fails at once (so an
    /// outage surfaces as `Unavailable` fast) and the next command tries again.
    pub async fn connect(config: &RedisConfig, extra: Duration) -> Result<Conn, RedisError> {
        let response = config.timeout + extra;
        if config.cluster {
            let client = ClusterClientBuilder::new(config.nodes.clone())
                .connection_timeout(config.timeout)
                .response_timeout(response)
                .retries(1)
                .min_retry_wait(50)
                .max_retry_wait(200)
                .build()?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        } else {
            let node = config.nodes.first().map_or("", String::as_str);
            let client = ::redis::Client::open(node)?;
            let options = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.timeout))
                .set_response_timeout(Some(response))
                .set_number_of_retries(0);
            Ok(Conn::Single(
                ConnectionManager::new_with_config(client, options).await?,
            ))
        }
    }

    /// Runs `cmd` on the node that holds `key`'s slot (any command on one server); for
    /// commands without a key, such as `CONFIG GET`, that a cluster would route anywhere.
    pub async fn on_node_of(&self, key: &str, cmd: Cmd) -> Result<Value, RedisError> {
        match self {
            Conn::Single(manager) => cmd.query_async(&mut manager.clone()).await,
            Conn::Cluster(cluster) => {
                let route = Route::with_key(key, SlotAddr::Master);
                cluster
                    .clone()
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await
            }
        }
    }
}

impl Conn {
    async fn send(&mut self, cmd: &Cmd) -> Result<Value, RedisError> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd).await,
            Conn::Cluster(c) => c.req_packed_command(cmd).await,
        }
    }
}

impl ConnectionLike for Conn {
    /// Sends `cmd`; when that needed a reconnect and the reconnect was refused (so the
    /// command was never sent), tries once more: after an outage the first command then
    /// finds Redis back instead of the failed reconnect that was still pending.
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.send(cmd).await {
                Err(e) if e.is_connection_refusal() => self.send(cmd).await,
                other => other,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// `what` failed against Redis: the operation did not take effect.
pub(crate) fn unavailable(what: &str, error: &RedisError) -> BusError {
    BusError::Unavailable(format!("redis {what}: {error}"))
}

/// Runs `future` (a Redis call) for at most `limit`: whatever the client does while
/// Redis is away, the bus never hangs. A timeout is `Unavailable`; Redis's own errors
/// are handed back for the caller to look at.
pub(crate) async fn timed<T>(
    what: &str,
    limit: Duration,
    future: impl Future<Output = Result<T, RedisError>>,
) -> Result<Result<T, RedisError>, BusError> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| BusError::Unavailable(format!("redis {what}: no answer within {limit:?}")))
}

/// [`timed`], with Redis's errors mapped to `Unavailable` too.
pub(crate) async fn bounded<T>(
    what: &str,
    limit: Duration,
    future: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, BusError> {
    timed(what, limit, future)
        .await?
        .map_err(|e| unavailable(what, &e))
}

/// Whether Redis says the consumer group (or its stream) is gone, as after a restart of
/// a Redis that persists nothing.
pub(crate) fn is_no_group(error: &RedisError) -> bool {
    error.code() == Some("NOGROUP")
}
