//! The fan-out on core NATS subjects (`nats://…`), not JetStream: every handle publishes
//! on and subscribes to `PREFIX.live` and `PREFIX.control`. A handle whose process has
//! live subscribers also subscribes to `PREFIX.live.listeners` and answers the requests
//! that arrive there; every `presence_every` each handle sends one such request: an
//! answer means another process listens, NATS's "no responders" means none does (the
//! crate docs give the semantics both backends share).
//!
//! One connection per handle, made with `no_echo`: the server does not hand a handle its
//! own publishes (nor its own presence requests) back. The client reconnects on its own
//! (every 100 ms at first, then every second, without limit) and restores the
//! subscriptions; the handle logs the loss and the reconnect. While disconnected the
//! client keeps publishes in its bounded command queue and sends them once connected;
//! a publish that finds the queue full past `timeout_ms` is a refused publish.
//!
//! Bounds: each subscription buffers at most [`SUBSCRIPTION_CAPACITY`] messages in the
//! client; past that the client drops messages and reports a slow consumer (logged).
//! Messages larger than the server's `max_payload` are never sent (the handle's size
//! limit is lowered to it at open).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::{Client, Event, ServerAddr, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;
use tracing::{info, warn};
use vigia_bus::nats::NatsConfig;

use crate::engine::{run_writer, Channel, Engine, WireSender};
use crate::FanoutOptions;

/// Messages each subscription may buffer in the client before it drops them.
pub const SUBSCRIPTION_CAPACITY: usize = 4096;
/// The longest pause between reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// The subjects of one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSubjects {
    /// `PREFIX.live`: live events.
    pub live: String,
    /// `PREFIX.control`: control messages.
    pub control: String,
    /// `PREFIX.live.listeners`: answered by handles with live subscribers.
    pub presence: String,
}

impl NatsSubjects {
    /// The subjects under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            live: format!("{prefix}.live"),
            control: format!("{prefix}.control"),
            presence: format!("{prefix}.live.listeners"),
        }
    }
}

/// The core NATS [`Fanout`]; see the module documentation.
pub struct NatsFanout {
    engine: Arc<Engine>,
    subjects: NatsSubjects,
    /// Dropped with the handle: its tasks stop (and with them the connection).
    _stop: watch::Sender<bool>,
}

impl std::fmt::Debug for NatsFanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsFanout")
            .field("subjects", &self.subjects)
            .field("origin", &format_args!("{:016x}", self.engine.origin()))
            .finish()
    }
}

/// Logs the client's connection events and counts reconnects.
fn on_event(engine: Arc<Engine>) -> impl Fn(Event) -> std::future::Ready<()> + Send + Sync {
    let disconnected = Arc::new(AtomicBool::new(false));
    let slow = Arc::new(AtomicU64::new(0));
    move |event| {
        match event {
            Event::Disconnected => {
                disconnected.store(true, Ordering::Relaxed);
                engine.set_remote_listeners(None);
                warn!("fan-out: lost the NATS connection; reconnecting");
            }
            Event::Connected => {
                if disconnected.swap(false, Ordering::Relaxed) {
                    engine.reconnected();
                }
            }
            Event::SlowConsumer(sid) => {
                let count = slow.fetch_add(1, Ordering::Relaxed) + 1;
                if count.is_power_of_two() {
                    warn!(
                        sid,
                        count, "fan-out: NATS dropped messages for a slow subscription"
                    );
                }
            }
            other => info!(event = %other, "fan-out: NATS connection event"),
        }
        std::future::ready(())
    }
}

impl NatsFanout {
    /// Connects and subscribes, then returns; fails within about twice `config.timeout`
    /// when NATS does not answer.
    pub async fn open(
        config: NatsConfig,
        prefix: &str,
        options: &FanoutOptions,
    ) -> Result<Self, String> {
        let servers = config
            .servers
            .iter()
            .map(|s| {
                format!("nats://{s}")
                    .parse::<ServerAddr>()
                    .map_err(|e| format!("invalid NATS server `{s}`: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err("no NATS server to connect to".into());
        }
        let (engine, outbox) = Engine::new("nats", options);
        let timeout = config.timeout;
        let mut connect = async_nats::ConnectOptions::new()
            .name("vigia-fanout")
            .no_echo()
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                (Duration::from_millis(100) * attempts.max(1) as u32).min(MAX_RECONNECT_DELAY)
            })
            .event_callback(on_event(engine.clone()));
        if let Some((user, password)) = &config.credentials {
            connect = connect.user_and_password(user.clone(), password.clone());
        }
        let addresses = config.servers.join(",");
        let failed =
            |what: &str, e: &dyn std::fmt::Display| format!("nats {addresses}: {what}: {e}");
        let client = tokio::time::timeout(timeout * 2, connect.connect(servers))
            .await
            .map_err(|_| {
                failed(
                    "connecting",
                    &format_args!("no answer within {:?}", timeout * 2),
                )
            })?
            .map_err(|e| failed("connecting", &e))?;
        let subjects = NatsSubjects::new(prefix);
        let live = client
            .subscribe(subjects.live.clone())
            .await
            .map_err(|e| failed("subscribing", &e))?;
        let control = client
            .subscribe(subjects.control.clone())
            .await
            .map_err(|e| failed("subscribing", &e))?;
        // A flush only empties the client's buffer. The server handles one connection's
        // commands in order, so once it answered a request sent after the SUBs it holds
        // them, and a message another process publishes after `open` returns reaches this
        // handle. The presence request serves: answered ("no responders" or a listener),
        // it also tells whether anyone listens.
        let probe = client.request(subjects.presence.clone(), Bytes::new());
        let listeners = match tokio::time::timeout(timeout, probe).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => false,
            Ok(Err(e)) => return Err(failed("subscribing", &e)),
            Err(_) => return Err(failed("subscribing", &"no answer")),
        };
        engine.set_remote_listeners(Some(listeners));
        let max_payload = client.server_info().max_payload;
        if max_payload > 0 {
            engine.limit_message_bytes(max_payload);
        }
        let (stop, stopped) = watch::channel(false);
        let reader = Reader {
            engine: engine.clone(),
            client: client.clone(),
            subjects: subjects.clone(),
            timeout,
            every: options.presence_every.max(Duration::from_millis(10)),
            stop: stopped.clone(),
        };
        tokio::spawn(reader.run(live, control));
        let sender = Publisher {
            client,
            subjects: subjects.clone(),
            timeout,
        };
        tokio::spawn(run_writer(engine.clone(), outbox, sender, stopped));
        Ok(Self {
            engine,
            subjects,
            _stop: stop,
        })
    }

    /// The subjects this handle uses.
    pub fn subjects(&self) -> &NatsSubjects {
        &self.subjects
    }
}

crate::engine::fanout_through_engine!(NatsFanout);

struct Publisher {
    client: Client,
    subjects: NatsSubjects,
    timeout: Duration,
}

impl WireSender for Publisher {
    async fn send(&self, channel: Channel, payload: Vec<u8>) -> Result<(), String> {
        let subject = match channel {
            Channel::Live => &self.subjects.live,
            Channel::Control => &self.subjects.control,
        };
        match tokio::time::timeout(
            self.timeout,
            self.client.publish(subject.clone(), Bytes::from(payload)),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no room to publish within {:?}", self.timeout)),
        }
    }
}

struct Reader {
    engine: Arc<Engine>,
    client: Client,
    subjects: NatsSubjects,
    timeout: Duration,
    every: Duration,
    stop: watch::Receiver<bool>,
}

impl Reader {
    /// Delivers what arrives and keeps presence up to date until the handle is dropped.
    async fn run(mut self, mut live: Subscriber, mut control: Subscriber) {
        let mut presence: Option<Subscriber> = None;
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let presence_request = async {
                match presence.as_mut() {
                    Some(subscriber) => subscriber.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.stop.changed() => return,
                message = live.next() => match message {
                    Some(message) => self.engine.receive(Channel::Live, &message.payload),
                    None => return,
                },
                message = control.next() => match message {
                    Some(message) => self.engine.receive(Channel::Control, &message.payload),
                    None => return,
                },
                request = presence_request => {
                    if let Some(reply) = request.and_then(|r| r.reply) {
                        // A lost answer only makes the asker think nobody listens for
                        // one period.
                        let _ = self.client.publish(reply, Bytes::new()).await;
                    }
                }
                _ = self.engine.presence_wanted() => {
                    if self.engine.wants_presence() && presence.is_none() {
                        presence = self.client.subscribe(self.subjects.presence.clone()).await.ok();
                    }
                }
                _ = tick.tick() => {
                    let wanted = self.engine.wants_presence();
                    if wanted && presence.is_none() {
                        presence = self.client.subscribe(self.subjects.presence.clone()).await.ok();
                    } else if !wanted {
                        // Dropping the subscriber unsubscribes.
                        presence = None;
                    }
                    let others = self.listeners().await;
                    self.engine.set_remote_listeners(others);
                }
            }
        }
    }

    /// Whether another handle answers on the presence subject: `None` when NATS did not
    /// say (disconnected, or no answer in time).
    async fn listeners(&self) -> Option<bool> {
        let limit = self.timeout.min(self.every);
        let request = self
            .client
            .request(self.subjects.presence.clone(), Bytes::new());
        match tokio::time::timeout(limit, request).await {
            Ok(Ok(_)) => Some(true),
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Some(false),
            Ok(Err(_)) | Err(_) => None,
        }
    }
}
