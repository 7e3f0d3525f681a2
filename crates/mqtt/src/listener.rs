//! The embedded MQTT 3.1.1 listener (`mqtt.listen`, off by default).
//!
//! A small session layer on rumqttc's codec (`mqttbytes::v4`), written here rather than
//! embedding a broker because a broker acks on receipt: here a PUBACK is written only
//! after [`vigia_services::IngestService::publish`] returned, i.e. once the readings are
//! durable on the bus. It is an ingest endpoint, not a broker: nothing is routed to
//! subscribers.
//!
//! - CONNECT: username = the tenant's slug, password = an API key of that tenant whose
//!   role may ingest (`device` or higher). Otherwise CONNACK "bad user name or password"
//!   (unknown key, other tenant) or "not authorized" (role), and the connection closes.
//!   Only MQTT 3.1.1 (protocol level 4); no session state is kept (`session_present` is
//!   always false: there are no subscriptions, and an unacked QoS 1 message is the
//!   client's to resend).
//! - PUBLISH QoS 0: stored when valid, never acked; QoS 1: PUBACK once durable (or once
//!   refused and listed); QoS 2: the connection is closed (unsupported).
//! - SUBSCRIBE: SUBACK with failure return codes; UNSUBSCRIBE: UNSUBACK.
//! - Bounds: `mqtt.max_connections` (past it CONNACK "server unavailable"),
//!   `mqtt.max_packet_bytes` (a larger packet closes the connection),
//!   `mqtt.max_inflight` (publishes decoded and published together per connection; the
//!   next are not read before they are acked), keep-alive (no packet within 1.5 × the
//!   client's keep-alive, capped at `mqtt.max_keep_alive`, closes the connection) and
//!   `mqtt.connect_timeout` (time allowed for the CONNECT).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode,
    UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use vigia_core::{Permission, Timestamp};
use vigia_services::{AuthError, Authenticator, Caller};
use vigia_store::Store;

use crate::{backoff, metrics_names, Message, MqttIngest, NotDurable, Sender};

/// Settings of the embedded listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub max_connections: usize,
    pub max_packet_bytes: usize,
    pub max_inflight: usize,
    pub max_keep_alive: Duration,
    pub connect_timeout: Duration,
}

/// What a connection needs.
struct Shared {
    ingest: Arc<MqttIngest>,
    auth: Arc<Authenticator>,
    store: Arc<dyn Store>,
    config: ListenerConfig,
    connections: Arc<Semaphore>,
}

/// A bound listener, not yet accepting.
pub struct Listener {
    tcp: TcpListener,
}

impl Listener {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Listener> {
        Ok(Listener {
            tcp: TcpListener::bind(addr).await?,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts connections until `stop`; the task ends once every connection finished
    /// (each settles its current batch and closes).
    pub fn spawn(
        self,
        ingest: Arc<MqttIngest>,
        auth: Arc<Authenticator>,
        store: Arc<dyn Store>,
        config: ListenerConfig,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let max = config.max_connections;
        let shared = Arc::new(Shared {
            ingest,
            auth,
            store,
            connections: Arc::new(Semaphore::new(max)),
            config,
        });
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    accepted = self.tcp.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(ok) => ok,
                    Err(e) => {
                        // Out of file descriptors and the like: do not spin.
                        warn!(error = %e, "MQTT accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                match shared.connections.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let shared = shared.clone();
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            metrics::gauge!(metrics_names::CONNECTIONS).increment(1.0);
                            if let Err(e) = connection(stream, &shared, stop).await {
                                debug!(%peer, error = %e, "MQTT connection closed");
                            }
                            metrics::gauge!(metrics_names::CONNECTIONS).decrement(1.0);
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        // Best effort, without reading the CONNECT: refusing must cost
                        // next to nothing.
                        let mut out = BytesMut::new();
                        let _ = ConnAck::new(ConnectReturnCode::ServiceUnavailable, false)
                            .write(&mut out);
                        let _ = stream.try_write(&out);
                        debug!(%peer, max, "MQTT connection refused: mqtt.max_connections reached");
                    }
                }
            }
            drop(self.tcp);
            // Wait for the open connections to settle their batches.
            let _ = tokio::time::timeout(
                Duration::from_secs(30),
                shared.connections.acquire_many(max as u32),
            )
            .await;
            info!("MQTT listener stopped");
        })
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed packet: {0}")]
    Codec(CodecError),
    #[error("{0}")]
    Protocol(String),
    #[error("no packet within {0:?}")]
    Idle(Duration),
}

/// Reads from a socket into a buffer and frames packets.
struct Reader {
    stream: TcpStream,
    buf: BytesMut,
    max_packet: usize,
}

impl Reader {
    /// The next packet already in the buffer, if complete.
    fn buffered(&mut self) -> Result<Option<Packet>, ConnError> {
        match Packet::read(&mut self.buf, self.max_packet) {
            Ok(packet) => Ok(Some(packet)),
            Err(CodecError::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(ConnError::Codec(e)),
        }
    }

    /// The next packet, reading as needed; `None` at end of stream.
    async fn next(&mut self) -> Result<Option<Packet>, ConnError> {
        loop {
            if let Some(packet) = self.buffered()? {
                return Ok(Some(packet));
            }
            self.buf.reserve(4096);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnError::Protocol("connection closed mid-packet".into()))
                };
            }
        }
    }

    async fn write(&mut self, packet: Packet) -> Result<(), ConnError> {
        let mut out = BytesMut::new();
        packet
            .write(&mut out, usize::MAX)
            .map_err(ConnError::Codec)?;
        self.stream.write_all(&out).await?;
        Ok(())
    }
}

async fn connection(
    stream: TcpStream,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let config = &shared.config;
    let mut reader = Reader {
        stream,
        buf: BytesMut::with_capacity(4096),
        max_packet: config.max_packet_bytes,
    };
    let first = tokio::time::timeout(config.connect_timeout, reader.next())
        .await
        .map_err(|_| ConnError::Idle(config.connect_timeout))??;
    let connect = match first {
        Some(Packet::Connect(connect)) => connect,
        None => return Ok(()),
        Some(other) => {
            return Err(ConnError::Protocol(format!(
                "expected CONNECT, got {other:?}"
            )))
        }
    };
    let (caller, slug) = match sign_in(shared, &connect).await {
        Ok(signed_in) => signed_in,
        Err(code) => {
            reader
                .write(Packet::ConnAck(ConnAck::new(code, false)))
                .await?;
            let _ = reader.stream.shutdown().await;
            return Err(ConnError::Protocol(format!("CONNECT refused: {code:?}")));
        }
    };
    reader
        .write(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        )))
        .await?;
    let idle = match connect.keep_alive {
        0 => config.max_keep_alive,
        secs => (Duration::from_secs(u64::from(secs)) * 3 / 2).min(config.max_keep_alive),
    };
    let sender = Sender::Device {
        caller: &caller,
        slug: &slug,
    };
    loop {
        let packet = tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            packet = tokio::time::timeout(idle, reader.next()) => {
                packet.map_err(|_| ConnError::Idle(idle))??
            }
        };
        let Some(packet) = packet else {
            return Ok(());
        };
        // Publishes already received are settled together (one bus publish); the
        // socket is not read further until they are acked.
        let mut publishes = Vec::new();
        let mut next = Some(packet);
        while let Some(packet) = next.take() {
            match packet {
                Packet::Publish(publish) => {
                    if publish.qos == QoS::ExactlyOnce {
                        settle(shared, &sender, &mut reader, &mut publishes, &mut stop).await?;
                        return Err(ConnError::Protocol(
                            "QoS 2 is not supported; publish with QoS 0 or 1".into(),
                        ));
                    }
                    publishes.push((publish, Timestamp::now()));
                    if publishes.len() < config.max_inflight {
                        next = reader.buffered()?;
                    }
                }
                other => {
                    settle(shared, &sender, &mut reader, &mut publishes, &mut stop).await?;
                    if !control(&mut reader, other).await? {
                        return Ok(());
                    }
                    next = reader.buffered()?;
                }
            }
        }
        settle(shared, &sender, &mut reader, &mut publishes, &mut stop).await?;
    }
}

/// Checks CONNECT's credentials: the caller and its tenant's slug, or the refusal.
async fn sign_in(
    shared: &Shared,
    connect: &Connect,
) -> Result<(Caller, String), ConnectReturnCode> {
    if connect.protocol != Protocol::V4 {
        return Err(ConnectReturnCode::RefusedProtocolVersion);
    }
    let login = connect
        .login
        .as_ref()
        .ok_or(ConnectReturnCode::BadUserNamePassword)?;
    let caller = match shared.auth.verify(&login.password).await {
        Ok(caller) => caller,
        Err(AuthError::InvalidKey) => return Err(ConnectReturnCode::BadUserNamePassword),
        Err(AuthError::Store(e)) => {
            warn!(error = %e, "MQTT sign-in: the store is unavailable");
            return Err(ConnectReturnCode::ServiceUnavailable);
        }
    };
    let tenant = shared
        .store
        .catalog()
        .tenant_by_slug(&login.username)
        .await
        .map_err(|_| ConnectReturnCode::ServiceUnavailable)?;
    match tenant {
        Some(tenant) if tenant.id == caller.tenant => {}
        // The key is another tenant's: as wrong as a wrong password.
        _ => return Err(ConnectReturnCode::BadUserNamePassword),
    }
    if caller.require(Permission::Ingest).is_err() {
        return Err(ConnectReturnCode::NotAuthorized);
    }
    Ok((caller, login.username.clone()))
}

/// Answers a packet other than PUBLISH; `false` when the client said goodbye.
async fn control(reader: &mut Reader, packet: Packet) -> Result<bool, ConnError> {
    match packet {
        Packet::PingReq => reader.write(Packet::PingResp).await?,
        Packet::Subscribe(subscribe) => {
            let codes = vec![SubscribeReasonCode::Failure; subscribe.filters.len()];
            reader
                .write(Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
                .await?
        }
        Packet::Unsubscribe(unsubscribe) => {
            reader
                .write(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
                .await?
        }
        Packet::Disconnect => return Ok(false),
        Packet::Connect(_) => return Err(ConnError::Protocol("a second CONNECT".into())),
        // Acks of messages we never send, and packets only a server sends.
        other => {
            return Err(ConnError::Protocol(format!(
                "unexpected packet from a client: {other:?}"
            )))
        }
    }
    Ok(true)
}

/// Makes the publishes durable (or refuses them for good), then acks the QoS 1 ones.
/// While the bus is full the client waits: its PUBACKs come when there is room.
async fn settle(
    shared: &Shared,
    sender: &Sender<'_>,
    reader: &mut Reader,
    publishes: &mut Vec<(Publish, Timestamp)>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), ConnError> {
    if publishes.is_empty() {
        return Ok(());
    }
    let messages: Vec<Message> = publishes
        .iter()
        .map(|(p, received)| Message {
            topic: p.topic.clone(),
            payload: p.payload.clone(),
            received: *received,
        })
        .collect();
    let now = Timestamp::now();
    let mut pending = shared.ingest.prepare(sender, &messages);
    loop {
        match shared.ingest.commit(&mut pending, now).await {
            Ok(()) => break,
            Err(NotDurable::Full(hint)) => {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {
                        return Err(ConnError::Protocol("stopping with the bus full; unacked".into()))
                    }
                    _ = tokio::time::sleep(backoff(hint)) => {}
                }
            }
            // Closing or failed: unacked, the client resends after reconnecting.
            Err(NotDurable::Unavailable(e)) => {
                return Err(ConnError::Protocol(format!("bus unavailable: {e}")))
            }
        }
    }
    let mut out = BytesMut::new();
    for (publish, _) in publishes.drain(..) {
        if publish.qos == QoS::AtLeastOnce {
            PubAck::new(publish.pkid)
                .write(&mut out)
                .map_err(ConnError::Codec)?;
        }
    }
    if !out.is_empty() {
        reader.stream.write_all(&out).await?;
    }
    Ok(())
}
