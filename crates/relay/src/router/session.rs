//! One connector's control channel on the router, independent of the transport: the
//! transport hands in [`Inbound`] frames and carries out [`Outbound`] ones (the WebSocket
//! adapter is [`super::websocket`]; an SSE-down + POST-up adapter would feed the same).
//!
//! The first message must be a `hello` whose token authenticates; then the channel is
//! registered under (tenant, id), replacing an older one of the same connector. Any
//! malformed message, or one a connector may not send, closes the channel with the reason
//! (counted in `vigia_relay_malformed_messages_total`). Silence for `offline_after` closes
//! it too. When it ends, its pending requests and in-flight transfers fail at once.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Channel, ConnectorKey, Inner, Relay};
use crate::protocol::{decode, encode, ErrorCode, Message, ProtocolError};
use crate::RelayError;

/// What the transport received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// One control message's text.
    Text(String),
    /// Something that is not a control message (a binary frame): the channel closes.
    Invalid(String),
}

/// What the transport must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// One control message's text.
    Text(String),
    /// Close the transport (after the `close` message sent just before).
    Close { reason: String },
}

/// Control messages queued for one connector's transport.
pub const OUTBOX_MESSAGES: usize = 64;

impl Relay {
    /// Serves one control channel until it ends. `incoming` ends when the transport
    /// closes; `outbound` is drained by the transport (bounded: `OUTBOX_MESSAGES`, 64).
    pub async fn serve_channel<S>(&self, incoming: S, outbound: mpsc::Sender<Outbound>)
    where
        S: Stream<Item = Inbound> + Send + Unpin,
    {
        serve(self.inner.clone(), incoming, outbound).await
    }
}

async fn serve<S>(inner: Arc<Inner>, mut incoming: S, outbound: mpsc::Sender<Outbound>)
where
    S: Stream<Item = Inbound> + Send + Unpin,
{
    let timeout = inner.config.request_timeout;
    let first = tokio::time::timeout(timeout, incoming.next()).await;
    let (connector, token) = match first {
        Ok(Some(Inbound::Text(text))) => match decode(&text) {
            Ok(Message::Hello {
                connector, token, ..
            }) => (connector, token),
            Ok(other) => {
                let err = ProtocolError::Direction {
                    sender: "connector before hello",
                    kind: other.kind(),
                };
                return malformed(&inner, &outbound, None, &err.to_string()).await;
            }
            Err(err) => return malformed(&inner, &outbound, None, &err.to_string()).await,
        },
        Ok(Some(Inbound::Invalid(why))) => return malformed(&inner, &outbound, None, &why).await,
        Ok(None) => return,
        Err(_) => return close(&outbound, "no hello within the request timeout", None).await,
    };
    let tenant = match inner.directory.authenticate(&connector, &token).await {
        Ok(Some(tenant)) => tenant,
        Ok(None) => {
            tracing::warn!(%connector, "control channel refused: wrong or revoked token");
            return close(&outbound, "wrong or revoked connector token", None).await;
        }
        Err(err) => {
            tracing::error!(%connector, "connector directory: {err}");
            let retry = Some(inner.config.retry_after);
            return close(&outbound, "the router cannot check tokens right now", retry).await;
        }
    };
    let shutting_down = *inner.shutting_down.lock().expect("never poisoned");
    if let Some(retry_after) = shutting_down {
        return close(&outbound, "the router is restarting", Some(retry_after)).await;
    }
    let key = ConnectorKey {
        tenant,
        id: connector.clone(),
    };
    let span = tracing::info_span!("channel", tenant = tenant.0, connector = %connector);
    run(inner, key, incoming, outbound).instrument(span).await
}

async fn run<S>(
    inner: Arc<Inner>,
    key: ConnectorKey,
    mut incoming: S,
    outbound: mpsc::Sender<Outbound>,
) where
    S: Stream<Item = Inbound> + Send + Unpin,
{
    let session = inner.next_id();
    let close_signal = CancellationToken::new();
    let close_reason = Arc::new(Mutex::new((String::new(), None)));
    let replaced = inner.lock_channels().insert(
        key.clone(),
        Channel {
            session,
            outbox: outbound.clone(),
            last_heard: Instant::now(),
            pending: HashMap::new(),
            close: close_signal.clone(),
            close_reason: close_reason.clone(),
        },
    );
    if let Some(old) = replaced {
        old.request_close("replaced by a newer connection of the same connector", None);
        // The old session's own cleanup fails its transfers; its pending answers are moot.
        drop(old.pending);
    }
    metrics::gauge!("vigia_relay_connectors_online").increment(1.0);
    tracing::info!("connector online");
    let welcome = Message::Welcome {
        heartbeat_secs: inner.config.heartbeat_interval.as_secs(),
    };
    let mut end = "the connector closed the channel".to_owned();
    if outbound
        .send(Outbound::Text(encode(&welcome)))
        .await
        .is_ok()
    {
        loop {
            let next = tokio::select! {
                () = close_signal.cancelled() => {
                    let (reason, retry_after) = close_reason.lock().expect("never poisoned").clone();
                    close(&outbound, &reason, retry_after).await;
                    end = reason;
                    break;
                }
                next = tokio::time::timeout(inner.config.offline_after, incoming.next()) => next,
            };
            let text = match next {
                Err(_) => {
                    end = format!("silent for {:?}", inner.config.offline_after);
                    close(&outbound, &end, None).await;
                    break;
                }
                Ok(None) => break,
                Ok(Some(Inbound::Invalid(why))) => {
                    malformed(&inner, &outbound, Some(&key), &why).await;
                    end = why;
                    break;
                }
                Ok(Some(Inbound::Text(text))) => text,
            };
            touch(&inner, &key, session);
            match decode(&text) {
                Ok(message) => {
                    if let Err(why) = handle(&inner, &key, session, message, &outbound) {
                        malformed(&inner, &outbound, Some(&key), &why).await;
                        end = why;
                        break;
                    }
                }
                Err(err) => {
                    end = err.to_string();
                    malformed(&inner, &outbound, Some(&key), &end).await;
                    break;
                }
            }
        }
    }
    end_session(&inner, &key, session, &end);
    metrics::gauge!("vigia_relay_connectors_online").decrement(1.0);
    tracing::info!("connector offline: {end}");
}

fn touch(inner: &Inner, key: &ConnectorKey, session: u64) {
    if let Some(channel) = inner.lock_channels().get_mut(key) {
        if channel.session == session {
            channel.last_heard = Instant::now();
        }
    }
}

/// Acts on one message; `Err` names a protocol violation.
fn handle(
    inner: &Inner,
    key: &ConnectorKey,
    session: u64,
    message: Message,
    outbound: &mpsc::Sender<Outbound>,
) -> Result<(), String> {
    match message {
        Message::Heartbeat => {
            // Echoed so the connector sees the router alive; a full outbox skips one echo.
            let _ = outbound.try_send(Outbound::Text(encode(&Message::Heartbeat)));
            Ok(())
        }
        Message::Datasets { request, .. } | Message::DatasetStat { request, .. } => {
            answer(inner, key, session, request, Ok(message));
            Ok(())
        }
        Message::Error {
            request: Some(request),
            code,
            message,
            ..
        } => {
            answer(
                inner,
                key,
                session,
                request,
                Err(connector_error((code, message))),
            );
            Ok(())
        }
        Message::Error {
            transfer: Some(transfer),
            code,
            message,
            ..
        } => {
            fail_transfer(inner, key, &transfer, connector_error((code, message)));
            Ok(())
        }
        Message::Error { message, .. } => {
            tracing::warn!("the connector reported an error: {message}");
            Ok(())
        }
        Message::Cancel { transfer, reason } => {
            fail_transfer(
                inner,
                key,
                &transfer,
                RelayError::ConnectorFailed(format!("cancelled by the connector: {reason}")),
            );
            Ok(())
        }
        other => Err(ProtocolError::Direction {
            sender: "connector",
            kind: other.kind(),
        }
        .to_string()),
    }
}

/// The client-facing error for a connector's error report.
pub(crate) fn connector_error((code, message): (ErrorCode, String)) -> RelayError {
    match code {
        ErrorCode::DatasetMissing => RelayError::DatasetMissing {
            dataset: String::new(),
            reason: message,
        },
        ErrorCode::Traversal => RelayError::Traversal {
            dataset: String::new(),
            reason: message,
        },
        ErrorCode::BadOffset => RelayError::BadRequest {
            field: "offset",
            message,
        },
        ErrorCode::Busy | ErrorCode::Io | ErrorCode::Malformed => {
            RelayError::ConnectorFailed(message)
        }
    }
}

fn answer(
    inner: &Inner,
    key: &ConnectorKey,
    session: u64,
    request: u64,
    result: Result<Message, RelayError>,
) {
    let waiter = inner
        .lock_channels()
        .get_mut(key)
        .filter(|c| c.session == session)
        .and_then(|c| c.pending.remove(&request));
    match waiter {
        Some(waiter) => {
            let _ = waiter.send(result);
        }
        None => tracing::debug!(request, "an answer nobody waits for (timed out)"),
    }
}

fn fail_transfer(
    inner: &Inner,
    key: &ConnectorKey,
    transfer: &crate::protocol::TransferId,
    err: RelayError,
) {
    let slot = inner.lock_transfers().get(transfer).cloned();
    // Only the transfer's own connector can fail it.
    if let Some(slot) = slot.filter(|s| s.key == *key) {
        slot.finish(inner, Err(err));
    }
}

/// Counts and logs a protocol violation and closes the channel naming it.
async fn malformed(
    inner: &Inner,
    outbound: &mpsc::Sender<Outbound>,
    key: Option<&ConnectorKey>,
    why: &str,
) {
    inner.malformed.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("vigia_relay_malformed_messages_total").increment(1);
    tracing::warn!(
        connector = key.map(|k| k.id.as_str()),
        "malformed control message, closing: {why}"
    );
    let error = Message::Error {
        request: None,
        transfer: None,
        code: ErrorCode::Malformed,
        message: why.to_owned(),
    };
    let _ = outbound.send(Outbound::Text(encode(&error))).await;
    close(outbound, why, None).await;
}

async fn close(outbound: &mpsc::Sender<Outbound>, reason: &str, retry_after: Option<Duration>) {
    let message = Message::Close {
        reason: reason.to_owned(),
        retry_after_secs: retry_after.map(|d| d.as_secs()),
    };
    let _ = outbound.send(Outbound::Text(encode(&message))).await;
    let _ = outbound
        .send(Outbound::Close {
            reason: reason.to_owned(),
        })
        .await;
}

/// Unregisters the session (unless a newer one replaced it) and fails everything that
/// depended on it.
fn end_session(inner: &Inner, key: &ConnectorKey, session: u64, why: &str) {
    let removed = {
        let mut channels = inner.lock_channels();
        match channels.get(key) {
            Some(channel) if channel.session == session => channels.remove(key),
            _ => None,
        }
    };
    if let Some(channel) = removed {
        inner.last_seen.lock().expect("never poisoned").insert(
            key.clone(),
            SystemTime::now() - channel.last_heard.elapsed(),
        );
        // Dropping the waiters answers every pending request with "channel closed".
        drop(channel.pending);
    }
    let orphans: Vec<_> = inner
        .lock_transfers()
        .values()
        .filter(|slot| slot.key == *key && slot.session == session)
        .cloned()
        .collect();
    for slot in orphans {
        slot.finish(
            inner,
            Err(RelayError::ConnectorGone(format!(
                "its control channel closed: {why}"
            ))),
        );
    }
}
