//! The control channel over an axum WebSocket: the web layer's `GET
//! /api/v1/connectors/channel` handler calls [`upgrade`] and returns its response.
//! Message and write-buffer sizes are bounded ([`crate::protocol::MAX_MESSAGE_BYTES`]).

use axum::extract::ws::{CloseFrame, Message as Frame, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::session::OUTBOX_MESSAGES;
use super::{Inbound, Outbound, Relay};
use crate::protocol::MAX_MESSAGE_BYTES;

/// Close code "policy violation" (RFC 6455 §7.4.1), for every router-initiated close.
const CLOSE_POLICY: u16 = 1008;

/// Accepts the upgrade with bounded sizes and serves the channel.
pub fn upgrade(relay: Relay, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(2 * MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(relay, socket))
}

/// Serves one upgraded socket until the channel ends.
pub async fn serve(relay: Relay, socket: WebSocket) {
    let (mut sink, mut frames) = socket.split();
    let (outbound, mut to_send) = mpsc::channel::<Outbound>(OUTBOX_MESSAGES);
    let writer = tokio::spawn(async move {
        while let Some(out) = to_send.recv().await {
            let frame = match out {
                Outbound::Text(text) => Frame::Text(text.into()),
                Outbound::Close { reason } => {
                    let reason: String = reason.chars().take(100).collect();
                    let _ = sink
                        .send(Frame::Close(Some(CloseFrame {
                            code: CLOSE_POLICY,
                            reason: reason.into(),
                        })))
                        .await;
                    break;
                }
            };
            if sink.send(frame).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let incoming = futures_util::stream::poll_fn(move |cx| loop {
        return match futures_util::ready!(frames.poll_next_unpin(cx)) {
            None | Some(Err(_)) | Some(Ok(Frame::Close(_))) => std::task::Poll::Ready(None),
            Some(Ok(Frame::Text(text))) => {
                std::task::Poll::Ready(Some(Inbound::Text(text.to_string())))
            }
            Some(Ok(Frame::Binary(_))) => std::task::Poll::Ready(Some(Inbound::Invalid(
                "a binary frame on the control channel".into(),
            ))),
            // Pings are answered by the socket; neither counts as a heartbeat.
            Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => continue,
        };
    });
    relay.serve_channel(Box::pin(incoming), outbound).await;
    // The session dropped its sender: the writer drains what is queued and ends.
    let _ = writer.await;
}
