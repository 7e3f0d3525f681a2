//! The fan-out on Redis pub/sub (`redis://…`): every handle publishes on and subscribes
//! to the channels `PREFIX:live` and `PREFIX:control`; a handle whose process has live
//! subscribers also subscribes to `PREFIX:live:listeners`, which nothing is published on:
//! `PUBSUB NUMSUB` of it, asked every `presence_every`, says whether another process
//! listens (the crate docs give the semantics both backends share).
//!
//! Two connections per handle: a reconnecting multiplexed one (`ConnectionManager`) for
//! `PUBLISH` and `PUBSUB NUMSUB`, and the subscriber connection, read by the handle's
//! reader task. That task pings the subscriber connection every `presence_every`; when
//! the connection closes or a ping goes unanswered for `timeout_ms` it logs the loss and
//! reconnects (every 100 ms at first, then every second), then logs the reconnect.
//!
//! Bounds: besides the crate's queues, Redis bounds what it holds for a subscriber that
//! reads too slowly (`client-output-buffer-limit pubsub`, 32 MiB by default) by closing
//! its connection; the handle then reconnects, and what was in between is lost, as live
//! events may be. The reader task hands each message on at once (decoding and a
//! non-blocking broadcast), so the client's own buffer stays short.

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use ::redis::Value;
use futures_util::StreamExt;
use tokio::sync::watch;
use tracing::warn;
use vigia_bus::redis::RedisConfig;

use crate::engine::{run_writer, Channel, Engine, WireSender};
use crate::FanoutOptions;

/// The first pause before reconnecting the subscriber connection.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between two reconnect attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// The channels of one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisChannels {
    /// `PREFIX:live`: live events.
    pub live: String,
    /// `PREFIX:control`: control messages.
    pub control: String,
    /// `PREFIX:live:listeners`: subscribed by handles with live subscribers.
    pub presence: String,
}

impl RedisChannels {
    /// The channels under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            live: format!("{prefix}:live"),
            control: format!("{prefix}:control"),
            presence: format!("{prefix}:live:listeners"),
        }
    }
}

/// The Redis pub/sub [`Fanout`]; see the module documentation.
pub struct RedisFanout {
    engine: Arc<Engine>,
    channels: RedisChannels,
    /// Dropped with the handle: its tasks stop.
    _stop: watch::Sender<bool>,
}

impl std::fmt::Debug for RedisFanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFanout")
            .field("channels", &self.channels)
            .field("origin", &format_args!("{:016x}", self.engine.origin()))
            .finish()
    }
}

impl RedisFanout {
    /// Connects both connections and subscribes, then returns; fails within about twice
    /// `config.timeout` when Redis does not answer.
    pub async fn open(
        config: RedisConfig,
        prefix: &str,
        options: &FanoutOptions,
    ) -> Result<Self, String> {
        let node = config
            .nodes
            .first()
            .ok_or("no Redis server to connect to")?;
        let address = config.addresses.join(",");
        let client = ::redis::Client::open(node.as_str()).map_err(|e| e.to_string())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(0);
        let manager = within(
            config.timeout * 2,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        .map_err(|e| format!("redis {address}: {e}"))?;
        let channels = RedisChannels::new(prefix);
        let pubsub = subscribe(&client, &channels, config.timeout)
            .await
            .map_err(|e| format!("redis {address}: subscribing: {e}"))?;
        let (engine, outbox) = Engine::new("redis", options);
        let (stop, stopped) = watch::channel(false);
        let reader = Reader {
            engine: engine.clone(),
            client,
            manager: manager.clone(),
            channels: channels.clone(),
            timeout: config.timeout,
            every: options.presence_every.max(Duration::from_millis(10)),
            stop: stopped.clone(),
        };
        tokio::spawn(reader.run(pubsub));
        let sender = Publisher {
            manager,
            channels: channels.clone(),
            timeout: config.timeout,
        };
        tokio::spawn(run_writer(engine.clone(), outbox, sender, stopped));
        Ok(Self {
            engine,
            channels,
            _stop: stop,
        })
    }

    /// The channels this handle uses.
    pub fn channels(&self) -> &RedisChannels {
        &self.channels
    }
}

crate::engine::fanout_through_engine!(RedisFanout);

/// `future` (a Redis call) for at most `limit`, its error as text.
async fn within<T>(
    limit: Duration,
    future: impl std::future::Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// A subscriber connection subscribed to the live and control channels.
async fn subscribe(
    client: &::redis::Client,
    channels: &RedisChannels,
    timeout: Duration,
) -> Result<PubSub, String> {
    let mut pubsub = within(timeout, client.get_async_pubsub()).await?;
    within(
        timeout,
        pubsub.subscribe(&[channels.live.as_str(), channels.control.as_str()]),
    )
    .await?;
    Ok(pubsub)
}

struct Publisher {
    manager: ConnectionManager,
    channels: RedisChannels,
    timeout: Duration,
}

impl WireSender for Publisher {
    async fn send(&self, channel: Channel, payload: Vec<u8>) -> Result<(), String> {
        let name = match channel {
            Channel::Live => &self.channels.live,
            Channel::Control => &self.channels.control,
        };
        let mut cmd = ::redis::cmd("PUBLISH");
        cmd.arg(name).arg(payload);
        within(
            self.timeout,
            cmd.query_async::<Value>(&mut self.manager.clone()),
        )
        .await
        .map(drop)
    }
}

struct Reader {
    engine: Arc<Engine>,
    client: ::redis::Client,
    manager: ConnectionManager,
    channels: RedisChannels,
    timeout: Duration,
    every: Duration,
    stop: watch::Receiver<bool>,
}

impl Reader {
    /// Reads `first`, then reconnects whenever the subscriber connection is lost, until
    /// the handle is dropped.
    async fn run(mut self, first: PubSub) {
        let mut pubsub = Some(first);
        let mut pause = RECONNECT_FIRST;
        loop {
            let connection = match pubsub.take() {
                Some(connection) => connection,
                None => match subscribe(&self.client, &self.channels, self.timeout).await {
                    Ok(connection) => {
                        pause = RECONNECT_FIRST;
                        self.engine.reconnected();
                        connection
                    }
                    Err(_) => {
                        tokio::select! {
                            _ = self.stop.changed() => return,
                            _ = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(RECONNECT_MAX);
                        continue;
                    }
                },
            };
            let Some(why) = self.read(connection).await else {
                return;
            };
            warn!(%why, channels = ?self.channels, "fan-out: lost the Redis subscriber connection; reconnecting");
            self.engine.set_remote_listeners(None);
        }
    }

    /// Delivers what arrives on `connection` and keeps presence up to date; returns why
    /// the connection is lost, or `None` when the handle was dropped.
    async fn read(&mut self, connection: PubSub) -> Option<String> {
        let (mut sink, mut stream) = connection.split();
        let mut presence = false;
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.changed() => return None,
                message = stream.next() => {
                    let Some(message) = message else {
                        return Some("the connection closed".into());
                    };
                    let channel = match message.get_channel_name() {
                        name if name == self.channels.live => Channel::Live,
                        name if name == self.channels.control => Channel::Control,
                        _ => continue,
                    };
                    self.engine.receive(channel, message.get_payload_bytes());
                }
                _ = self.engine.presence_wanted() => {
                    if self.engine.wants_presence() && !presence {
                        if let Err(e) = within(self.timeout, sink.subscribe(&self.channels.presence)).await {
                            return Some(format!("subscribing to presence: {e}"));
                        }
                        presence = true;
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = within(self.timeout, sink.ping::<Value>()).await {
                        return Some(format!("ping: {e}"));
                    }
                    let wanted = self.engine.wants_presence();
                    if wanted != presence {
                        let changed = if wanted {
                            within(self.timeout, sink.subscribe(&self.channels.presence)).await
                        } else {
                            within(self.timeout, sink.unsubscribe(&self.channels.presence)).await
                        };
                        if let Err(e) = changed {
                            return Some(format!("presence: {e}"));
                        }
                        presence = wanted;
                    }
                    let others = self.listeners().await.ok().map(|n| n - i64::from(presence) > 0);
                    self.engine.set_remote_listeners(others);
                }
            }
        }
    }

    /// How many connections subscribe to the presence channel.
    async fn listeners(&self) -> Result<i64, String> {
        let mut cmd = ::redis::cmd("PUBSUB");
        cmd.arg("NUMSUB").arg(&self.channels.presence);
        let (_, count): (String, i64) =
            within(self.timeout, cmd.query_async(&mut self.manager.clone())).await?;
        Ok(count)
    }
}
