//! The volatile bus (`volatile://`): in memory only, nothing survives the process. For
//! tests and experiments; it keeps every other promise of the contract and passes the
//! whole conformance suite.
//!
//! The messages live in a [`VolatileState`], which plays the broker: several
//! [`VolatileBus`] handles on one state behave like processes sharing one broker (each
//! delivery goes to one of them; lag and capacity are the state's). A handle that goes
//! away hands its unacked deliveries back, as a consumer's death does on a broker, so
//! "restarting" is opening a new handle on the same state.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::drain::{reserve, DrainMeter};
use crate::queue::{Budget, Queue};
use crate::{Bus, BusError, Capacity, Delivery, DeliveryToken, Message, Topic, TOPIC_COUNT};

/// Dead letters kept for inspection; older ones are dropped (memory stays bounded).
const DEAD_LETTERS_KEPT: usize = 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every structure here is updated in steps that leave it consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One topic of the state.
struct TopicState {
    /// The queue and the next sequence number, under one lock so sequence order is
    /// queue order.
    queue: Mutex<(Queue, u64)>,
    /// Woken when messages become receivable or a handle closes.
    ready: Notify,
    lag: AtomicU64,
    drain: Mutex<DrainMeter>,
}

/// A message rejected to dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The topic it was published on.
    pub topic: Topic,
    /// Its bytes as published.
    pub payload: Bytes,
    /// Why it was rejected.
    pub reason: String,
}

struct StateInner {
    topics: [TopicState; TOPIC_COUNT],
    capacity: Capacity,
    dead_letters: Mutex<VecDeque<DeadLetter>>,
}

/// The messages of a volatile bus, shared by its handles (the "broker"). Cloning shares.
#[derive(Clone)]
pub struct VolatileState(Arc<StateInner>);

impl VolatileState {
    /// An empty state refusing publishes past `capacity` (lag per topic).
    pub fn new(capacity: Capacity) -> Self {
        // Nothing is ever read back from elsewhere: every payload stays in memory, which
        // capacity bounds.
        let budget = Arc::new(Budget::new(0));
        let topic = || TopicState {
            queue: Mutex::new((Queue::new(Arc::clone(&budget), true), 1)),
            ready: Notify::new(),
            lag: AtomicU64::new(0),
            drain: Mutex::new(DrainMeter::new(Instant::now())),
        };
        Self(Arc::new(StateInner {
            topics: std::array::from_fn(|_| topic()),
            capacity,
            dead_letters: Mutex::new(VecDeque::new()),
        }))
    }

    fn topic(&self, topic: Topic) -> &TopicState {
        &self.0.topics[topic.index()]
    }

    /// The most recent rejected messages, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.0.dead_letters).iter().cloned().collect()
    }
}

/// A handle on a [`VolatileState`]; see the module documentation.
pub struct VolatileBus {
    state: VolatileState,
    /// Tells this handle's tokens from other handles'.
    owner: u64,
    closed: AtomicBool,
}

impl VolatileBus {
    /// A bus on a state of its own.
    pub fn new(capacity: Capacity) -> Self {
        Self::open(&VolatileState::new(capacity))
    }

    /// A new handle on `state`, as a process (re)connecting to a broker.
    pub fn open(state: &VolatileState) -> Self {
        Self {
            state: state.clone(),
            owner: crate::message::next_owner(),
            closed: AtomicBool::new(false),
        }
    }

    /// The state this handle works on.
    pub fn state(&self) -> &VolatileState {
        &self.state
    }

    /// Applies `settle` to each token of this handle, per topic, with its sequence number.
    fn for_each_own(&self, tokens: Vec<DeliveryToken>, mut settle: impl FnMut(Topic, u64)) {
        for token in tokens {
            if let Some(seq) = token.seq_of(self.owner) {
                settle(token.topic(), seq);
            }
        }
    }

    /// Settles deliveries for good and takes their weight off the lag.
    fn settle(&self, topic: Topic, seqs: Vec<u64>) -> u64 {
        let state = self.state.topic(topic);
        let (_, weight) = lock(&state.queue).0.settle(seqs, self.owner);
        if weight > 0 {
            state.lag.fetch_sub(weight, Ordering::SeqCst);
            lock(&state.drain).record(weight, Instant::now());
        }
        weight
    }
}

#[async_trait]
impl Bus for VolatileBus {
    async fn publish(&self, topic: Topic, message: Message) -> Result<(), BusError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(BusError::Closed);
        }
        let state = self.state.topic(topic);
        let weight = u64::from(message.weight);
        reserve(
            &state.lag,
            weight,
            self.state.0.capacity.of(topic),
            &state.drain,
        )?;
        {
            let mut guard = lock(&state.queue);
            let (queue, next) = &mut *guard;
            queue.push_back(*next, weight, message.payload, message.local);
            *next += 1;
        }
        state.ready.notify_waiters();
        Ok(())
    }

    async fn receive(&self, topic: Topic, max_weight: usize) -> Result<Vec<Delivery>, BusError> {
        let state = self.state.topic(topic);
        loop {
            let notified = state.ready.notified();
            tokio::pin!(notified);
            // Registered before looking, so a wake-up between the look and the wait is
            // not lost.
            notified.as_mut().enable();
            let taken = lock(&state.queue).0.take(max_weight, self.owner);
            if !taken.is_empty() {
                return Ok(taken
                    .into_iter()
                    .map(|entry| {
                        Delivery::new(
                            DeliveryToken::seq(self.owner, topic, entry.seq),
                            entry.payload.unwrap_or_default(),
                            u32::try_from(entry.weight).unwrap_or(u32::MAX),
                            entry.redelivered,
                            entry.local,
                        )
                    })
                    .collect());
            }
            if self.closed.load(Ordering::SeqCst) {
                return Err(BusError::Closed);
            }
            notified.await;
        }
    }

    async fn ack(&self, tokens: Vec<DeliveryToken>) -> Result<(), BusError> {
        let mut per_topic: [Vec<u64>; TOPIC_COUNT] = Default::default();
        self.for_each_own(tokens, |topic, seq| per_topic[topic.index()].push(seq));
        for (topic, seqs) in Topic::ALL.into_iter().zip(per_topic) {
            if !seqs.is_empty() {
                self.settle(topic, seqs);
            }
        }
        Ok(())
    }

    async fn nack(&self, tokens: Vec<DeliveryToken>) -> Result<(), BusError> {
        let mut per_topic: [Vec<u64>; TOPIC_COUNT] = Default::default();
        self.for_each_own(tokens, |topic, seq| per_topic[topic.index()].push(seq));
        for (topic, seqs) in Topic::ALL.into_iter().zip(per_topic) {
            let state = self.state.topic(topic);
            if !seqs.is_empty() && lock(&state.queue).0.requeue(seqs, self.owner) > 0 {
                state.ready.notify_waiters();
            }
        }
        Ok(())
    }

    async fn reject(&self, token: DeliveryToken, reason: String) -> Result<(), BusError> {
        let Some(seq) = token.seq_of(self.owner) else {
            return Ok(());
        };
        let topic = token.topic();
        let state = self.state.topic(topic);
        // Read and settled under one lock, so the dead letter holds what was settled.
        let payload = {
            let mut guard = lock(&state.queue);
            let payload = guard.0.payload_in_flight(seq, self.owner);
            let (settled, weight) = guard.0.settle([seq], self.owner);
            if settled.is_empty() {
                return Ok(());
            }
            state.lag.fetch_sub(weight, Ordering::SeqCst);
            payload
        };
        let mut dead = lock(&self.state.0.dead_letters);
        if dead.len() == DEAD_LETTERS_KEPT {
            dead.pop_front();
        }
        dead.push_back(DeadLetter {
            topic,
            payload: payload.unwrap_or_default(),
            reason,
        });
        Ok(())
    }

    async fn lag(&self, topic: Topic) -> Result<u64, BusError> {
        Ok(self.state.topic(topic).lag.load(Ordering::SeqCst))
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for topic in &self.state.0.topics {
            topic.ready.notify_waiters();
        }
    }
}

impl Drop for VolatileBus {
    fn drop(&mut self) {
        // As a consumer's death on a broker: what it held goes back to the others.
        for topic in &self.state.0.topics {
            if lock(&topic.queue).0.requeue_owner(self.owner) > 0 {
                topic.ready.notify_waiters();
            }
        }
    }
}
