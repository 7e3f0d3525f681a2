//! What the per-topic helpers ([`crate::readings`], [`crate::events`]) share: decoding a
//! delivery (through the in-process fast path when it can) and rejecting to dead
//! letters what cannot be decoded, so a bad payload is never handed back forever.

use std::any::Any;
use std::sync::Arc;

use crate::{Bus, BusError, DecodeError, Delivery, DeliveryToken, Topic};

/// A topic's value type and wire format.
pub(crate) trait Codec {
    /// What the topic carries.
    type Value: Any + Send + Sync;
    /// The topic (the family's first, for a partitioned one).
    const TOPIC: Topic;
    /// Whether deliveries of `topic` carry this codec's values.
    fn carries(topic: Topic) -> bool {
        topic == Self::TOPIC
    }
    /// Inverse of the publisher's encoding.
    fn decode(bytes: &[u8]) -> Result<Self::Value, String>;
}

/// A delivery decoded into its topic's type; settle it through its token.
#[derive(Debug, Clone)]
pub struct Received<T> {
    /// What to pass to ack or nack.
    pub token: DeliveryToken,
    /// The value as published (shared with the publisher when it is in this process).
    pub value: Arc<T>,
    /// Handed out before: its effects may already be partly applied.
    pub redelivered: bool,
}

/// The delivery's value: the publisher's own when it rode along, else decoded.
pub(crate) fn value<C: Codec>(delivery: &Delivery) -> Result<Arc<C::Value>, DecodeError> {
    let topic = delivery.token.topic();
    if !C::carries(topic) {
        return Err(DecodeError {
            topic,
            reason: format!("not a {} delivery", C::TOPIC),
        });
    }
    if let Some(value) = delivery.local().and_then(|l| l.get::<C::Value>()) {
        return Ok(value);
    }
    C::decode(&delivery.payload)
        .map(Arc::new)
        .map_err(|reason| DecodeError { topic, reason })
}

/// Receives from `topic` (one the codec carries) and decodes; what cannot be decoded is
/// rejected and the receive goes on, so the result is never empty.
pub(crate) async fn receive<C: Codec, B: Bus + ?Sized>(
    bus: &B,
    topic: Topic,
    max_weight: usize,
) -> Result<Vec<Received<C::Value>>, BusError> {
    debug_assert!(C::carries(topic), "{topic} does not carry this codec");
    loop {
        let deliveries = bus.receive(topic, max_weight).await?;
        let mut decoded = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match value::<C>(&delivery) {
                Ok(value) => decoded.push(Received {
                    token: delivery.token,
                    value,
                    redelivered: delivery.redelivered,
                }),
                Err(error) => reject(bus, delivery.token, &error).await,
            }
        }
        if !decoded.is_empty() {
            return Ok(decoded);
        }
    }
}

async fn reject<B: Bus + ?Sized>(bus: &B, token: DeliveryToken, error: &DecodeError) {
    tracing::error!(topic = %error.topic, %error, "bus: moving an undecodable message to dead letters");
    if let Err(failed) = bus.reject(token, error.reason.clone()).await {
        // It stays in flight: the next start hands it back and it is rejected then.
        tracing::warn!(topic = %error.topic, error = %failed, "bus: could not reject an undecodable message");
    }
}
