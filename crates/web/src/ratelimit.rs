//! Rate limits: a keyed limiter (governor's GCRA, idle keys evicted) answering 429
//! problem+json with `Retry-After`, and its first use, a tower layer that limits failed
//! authentications per client address.
//!
//! Failed authentications: each 401 costs the client's address one cell of a bucket of
//! `auth.max_failures_per_second` (burst the same). The failure that finds the bucket
//! empty is answered 429 instead of 401, and the address is refused with 429 for the
//! `Retry-After` it was given (the refill time, rounded up to whole seconds) — valid keys
//! from that address too, because an unknown key costs a
//! store lookup and an address that floods them is the load being shed. Addresses are
//! remembered only while their bucket is not full: idle ones are evicted every
//! [`EVICT_EVERY`], so memory follows the number of addresses failing right now.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::sync::Arc;

use crate::error::ApiError;

/// How often idle keys are evicted.
pub const EVICT_EVERY: Duration = Duration::from_secs(10);

/// A limiter per key with a refusal deadline per refused key.
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
    /// Keys refused until an instant (the bucket is empty until then).
    blocked: Mutex<HashMap<K, Instant>>,
    last_evicted: Mutex<Instant>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// `per_second` events a second per key, with a burst of the same size.
    pub fn new(per_second: NonZeroU32) -> Self {
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second)),
            clock: DefaultClock::default(),
            blocked: Mutex::new(HashMap::new()),
            last_evicted: Mutex::new(Instant::now()),
        }
    }

    /// When `key` may try again, if it is refused now.
    pub fn refused_until(&self, key: &K) -> Option<Duration> {
        self.evict_idle();
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let until = *blocked.get(key)?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// Counts one event of `key`; `Err(wait)` when its bucket is empty, after which the
    /// key is refused for `wait`.
    pub fn hit(&self, key: &K) -> Result<(), Duration> {
        match self.limiter.check_key(key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                // Whole seconds, as `Retry-After` says: a client that honours the header
                // is served when it comes back, and a flood is held off for a second.
                let wait = not_until.wait_time_from(self.clock.now());
                let wait = Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64);
                self.blocked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.clone(), Instant::now() + wait);
                Err(wait)
            }
        }
    }

    /// Keys currently remembered (buckets not yet full again).
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }

    fn evict_idle(&self) {
        let mut last = self.last_evicted.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() < EVICT_EVERY {
            return;
        }
        *last = Instant::now();
        drop(last);
        self.evict_now();
    }

    /// Forgets keys whose bucket is full again and whose refusal is over.
    pub fn evict_now(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let now = Instant::now();
        self.blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, until| *until > now);
    }
}

/// Failed authentications per client address.
pub type FailedAuthLimiter = KeyedLimiter<IpAddr>;

/// Ingest requests per API key (`ingest.max_requests_per_second_per_key`).
pub type IngestLimiter = KeyedLimiter<vigia_core::ApiKeyId>;

/// Counts one ingest request of the caller's key; 429 with `Retry-After` past its rate,
/// so one flooding device key cannot take the capacity other keys need.
pub fn check_ingest_rate(
    limiter: &IngestLimiter,
    key: vigia_core::ApiKeyId,
) -> Result<(), ApiError> {
    limiter.hit(&key).map_err(|wait| {
        too_many(
            "this API key sent more ingest requests per second than \
             `ingest.max_requests_per_second_per_key` allows",
            wait,
        )
    })
}

/// A 429 problem telling the client when to come back.
pub fn too_many(detail: impl Into<String>, wait: Duration) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
        detail,
    );
    // Whole seconds, rounded up: a client that waits exactly this long succeeds.
    e.retry_after_secs = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
    e
}

/// The layer's function: refuses addresses over their failure budget, and counts 401s.
pub async fn limit_failed_auth(
    State(limiter): State<Arc<FailedAuthLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let Some(address) = address else {
        return next.run(request).await;
    };
    if let Some(wait) = limiter.refused_until(&address) {
        return too_many(
            "too many failed authentications from this address; try again later",
            wait,
        )
        .into_response();
    }
    let response = next.run(request).await;
    if response.status() != StatusCode::UNAUTHORIZED {
        return response;
    }
    match limiter.hit(&address) {
        Ok(()) => response,
        Err(wait) => too_many(
            "too many failed authentications from this address; try again later",
            wait,
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_past_the_burst_is_refused_then_the_key_is_blocked() {
        let limiter: KeyedLimiter<u32> = KeyedLimiter::new(NonZeroU32::new(20).unwrap());
        for i in 0..20 {
            assert!(limiter.hit(&1).is_ok(), "event {i} within the burst");
        }
        let wait = limiter.hit(&1).expect_err("the 21st in a second");
        assert_eq!(
            wait,
            Duration::from_secs(1),
            "rounded up to Retry-After's seconds"
        );
        assert!(
            limiter.refused_until(&1).is_some(),
            "blocked until the bucket refills"
        );
        assert!(
            limiter.refused_until(&2).is_none(),
            "other keys are not affected"
        );
        assert!(limiter.hit(&2).is_ok());
    }

    #[test]
    fn idle_keys_are_evicted() {
        let limiter: KeyedLimiter<u32> = KeyedLimiter::new(NonZeroU32::new(1000).unwrap());
        for key in 0..500 {
            limiter.hit(&key).unwrap();
        }
        assert_eq!(limiter.tracked(), 500);
        std::thread::sleep(Duration::from_millis(20));
        limiter.evict_now();
        assert_eq!(limiter.tracked(), 0, "full buckets are forgotten");
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let e = too_many("x", Duration::from_millis(1200));
        assert_eq!(e.retry_after_secs, Some(2));
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
    }
}
