//! The in-memory side of the embedded and volatile buses, one [`Queue`] per topic: which
//! messages wait for a consumer, which are in flight and with which bus handle, and how
//! much payload memory is held (against a [`Budget`] shared by the topics).
//!
//! For the embedded bus every message here is already durable in its log; this structure
//! only decides what to hand out next, and a payload that did not fit the memory budget
//! is left out (`None`) and read back from the file when the message is received. The
//! volatile bus has no file, so its queues retain every payload, in flight included.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use crate::message::Local;

/// Bytes of waiting payloads (and in-process values) a bus may hold in memory.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Counts `bytes` in if they fit.
    pub fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|after| *after <= self.limit)
            })
            .is_ok()
    }

    /// Whether `bytes` more would fit now.
    pub fn has_room(&self, bytes: usize) -> bool {
        self.used
            .load(Ordering::SeqCst)
            .checked_add(bytes)
            .is_some_and(|after| after <= self.limit)
    }

    /// Counts `bytes` out again.
    pub fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
    }

    /// Bytes counted in.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

/// One message waiting in a queue or just taken from it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub seq: u64,
    pub weight: u64,
    /// The encoded message, when it is held in memory.
    pub payload: Option<Bytes>,
    /// The publisher's value, when it is held in memory.
    pub local: Option<Local>,
    /// Handed out before (nacked, or recovered after a restart).
    pub redelivered: bool,
    /// Bytes of the budget this entry holds while it waits.
    cost: usize,
}

/// What a queue remembers of a delivery in flight.
#[derive(Debug)]
struct Flight {
    weight: u64,
    /// The bus handle it was handed to: only that handle may settle it.
    owner: u64,
    /// The payload and value, kept only by queues that retain them (volatile).
    kept: Option<(Option<Bytes>, Option<Local>)>,
}

/// FIFO of messages plus the set of deliveries not yet settled.
#[derive(Debug)]
pub(crate) struct Queue {
    ready: VecDeque<Entry>,
    in_flight: HashMap<u64, Flight>,
    budget: std::sync::Arc<Budget>,
    /// Keep every payload, waiting or in flight, whatever the budget (no file to read
    /// them back from).
    retain: bool,
}

impl Queue {
    /// An empty queue drawing on `budget`; `retain` keeps payloads regardless of it.
    pub fn new(budget: std::sync::Arc<Budget>, retain: bool) -> Self {
        Self {
            ready: VecDeque::new(),
            in_flight: HashMap::new(),
            budget,
            retain,
        }
    }

    /// Appends a message; its payload and value are kept while the budget allows (the
    /// value goes first: a consumer can always decode the bytes).
    pub fn push_back(&mut self, seq: u64, weight: u64, payload: Bytes, local: Option<Local>) {
        let bytes = payload.len();
        let with_local = bytes.saturating_add(local.as_ref().map_or(0, Local::bytes));
        let (payload, local, cost) = if self.retain {
            (Some(payload), local, 0)
        } else if self.budget.try_take(with_local) {
            (Some(payload), local, with_local)
        } else if self.budget.try_take(bytes) {
            (Some(payload), None, bytes)
        } else {
            (None, None, 0)
        };
        self.ready.push_back(Entry {
            seq,
            weight,
            payload,
            local,
            redelivered: false,
            cost,
        });
    }

    /// Appends a message found in the log at start-up: it may have been delivered by the
    /// previous run. Without a payload it is read back from the file when received.
    pub fn push_back_recovered(&mut self, seq: u64, weight: u64, payload: Option<Bytes>) {
        let payload = payload.filter(|p| self.retain || self.budget.try_take(p.len()));
        let cost = match (&payload, self.retain) {
            (Some(p), false) => p.len(),
            _ => 0,
        };
        self.ready.push_back(Entry {
            seq,
            weight,
            payload,
            local: None,
            redelivered: true,
            cost,
        });
    }

    /// Whether a payload of `bytes` would still fit the memory budget.
    pub fn has_room(&self, bytes: usize) -> bool {
        self.budget.has_room(bytes)
    }

    /// Takes messages from the front weighing up to `max_weight`, but always at least
    /// one, and marks them in flight with `owner`. Their memory leaves the budget.
    pub fn take(&mut self, max_weight: usize, owner: u64) -> Vec<Entry> {
        let max = max_weight as u64;
        let mut taken = Vec::new();
        let mut weight = 0u64;
        while let Some(front) = self.ready.front() {
            if !taken.is_empty() && weight.saturating_add(front.weight) > max {
                break;
            }
            let mut entry = self
                .ready
                .pop_front()
                .expect("front() just returned an entry");
            weight = weight.saturating_add(entry.weight);
            self.budget.give(std::mem::take(&mut entry.cost));
            let kept = self
                .retain
                .then(|| (entry.payload.clone(), entry.local.clone()));
            self.in_flight.insert(
                entry.seq,
                Flight {
                    weight: entry.weight,
                    owner,
                    kept,
                },
            );
            taken.push(entry);
        }
        taken
    }

    /// Settles `owner`'s in-flight deliveries for good (ack, reject). Returns the ones
    /// that were in flight and their total weight; unknown, foreign or already settled
    /// sequence numbers are ignored, so settling twice never counts twice.
    pub fn settle(&mut self, seqs: impl IntoIterator<Item = u64>, owner: u64) -> (Vec<u64>, u64) {
        let mut settled = Vec::new();
        let mut weight = 0u64;
        for seq in seqs {
            if self.in_flight.get(&seq).is_some_and(|f| f.owner == owner) {
                if let Some(flight) = self.in_flight.remove(&seq) {
                    settled.push(seq);
                    weight = weight.saturating_add(flight.weight);
                }
            }
        }
        (settled, weight)
    }

    /// The payload a retaining queue keeps for `owner`'s delivery `seq` in flight.
    pub fn payload_in_flight(&self, seq: u64, owner: u64) -> Option<Bytes> {
        self.in_flight
            .get(&seq)
            .filter(|f| f.owner == owner)
            .and_then(|f| f.kept.as_ref())
            .and_then(|(payload, _)| payload.clone())
    }

    /// Puts `owner`'s in-flight deliveries back at the front, oldest first, for
    /// redelivery (nack). Returns how many were requeued.
    pub fn requeue(&mut self, seqs: impl IntoIterator<Item = u64>, owner: u64) -> usize {
        let mut back: Vec<(u64, Flight)> = Vec::new();
        for seq in seqs {
            if self.in_flight.get(&seq).is_some_and(|f| f.owner == owner) {
                if let Some(flight) = self.in_flight.remove(&seq) {
                    back.push((seq, flight));
                }
            }
        }
        let count = back.len();
        back.sort_unstable_by_key(|(seq, _)| *seq);
        for (seq, flight) in back.into_iter().rev() {
            let (payload, local) = flight.kept.unwrap_or((None, None));
            self.ready.push_front(Entry {
                seq,
                weight: flight.weight,
                payload,
                local,
                redelivered: true,
                cost: 0,
            });
        }
        count
    }

    /// Requeues every delivery `owner` still holds (its consumer went away).
    pub fn requeue_owner(&mut self, owner: u64) -> usize {
        let seqs: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.owner == owner)
            .map(|(seq, _)| *seq)
            .collect();
        self.requeue(seqs, owner)
    }

    /// Whether nothing waits to be handed out.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const OWNER: u64 = 1;

    fn seqs(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    fn queue_with(weights: &[u64]) -> Queue {
        let mut q = Queue::new(Arc::new(Budget::new(usize::MAX)), false);
        for (i, &w) in weights.iter().enumerate() {
            q.push_back(i as u64 + 1, w, Bytes::from_static(&[0; 4]), None);
        }
        q
    }

    #[test]
    fn take_respects_max_weight_but_returns_at_least_one() {
        // (weight per message, max_weight, expected seqs taken)
        let cases: &[(&[u64], usize, &[u64])] = &[
            (&[1, 1, 1], 2, &[1, 2]),
            (&[3, 3, 3], 5, &[1]),
            (&[3, 3, 3], 6, &[1, 2]),
            (&[10, 1], 1, &[1]),
            (&[10, 1], 0, &[1]),
            (&[0, 0, 2], 1, &[1, 2]),
            (&[1, 1, 1], 100, &[1, 2, 3]),
            (&[u64::MAX, 1], 5, &[1]),
            (&[], 5, &[]),
        ];
        for (weights, max, expected) in cases {
            let mut q = queue_with(weights);
            assert_eq!(
                seqs(&q.take(*max, OWNER)),
                *expected,
                "{weights:?} max {max}"
            );
        }
    }

    #[test]
    fn payloads_beyond_the_budget_are_left_on_disk_and_values_go_first() {
        let budget = Arc::new(Budget::new(10));
        let mut q = Queue::new(Arc::clone(&budget), false);
        let local = || Some(Local::new(Arc::new(0u8), 3));
        q.push_back(1, 1, Bytes::from_static(&[1; 4]), local()); // 7: both kept
        q.push_back(2, 1, Bytes::from_static(&[2; 2]), local()); // 5 > 3 left: bytes only
        q.push_back(3, 1, Bytes::from_static(&[3; 4]), local()); // 4 > 1 left: nothing
        assert_eq!(budget.used(), 9);
        let taken = q.take(10, OWNER);
        let kept: Vec<(bool, bool)> = taken
            .iter()
            .map(|e| (e.payload.is_some(), e.local.is_some()))
            .collect();
        assert_eq!(kept, [(true, true), (true, false), (false, false)]);
        assert_eq!(budget.used(), 0, "taking releases the budget");
        q.push_back_recovered(4, 1, Some(Bytes::from_static(&[4; 10])));
        q.push_back_recovered(5, 1, Some(Bytes::from_static(&[5; 1])));
        let taken = q.take(10, OWNER);
        assert!(taken.iter().all(|e| e.redelivered), "recovered may be seen");
        let kept: Vec<bool> = taken.iter().map(|e| e.payload.is_some()).collect();
        assert_eq!(kept, [true, false], "recovered payloads respect the budget");
    }

    #[test]
    fn settle_counts_each_in_flight_delivery_once_and_only_for_its_owner() {
        let mut q = queue_with(&[2, 3, 4]);
        q.take(100, OWNER);
        assert_eq!(q.settle([2], OWNER + 1), (vec![], 0), "foreign owner");
        assert_eq!(q.settle([2, 2, 99], OWNER), (vec![2], 3));
        assert_eq!(q.settle([2], OWNER), (vec![], 0), "second ack is a no-op");
        assert_eq!(q.settle([1, 3], OWNER), (vec![1, 3], 6));
    }

    #[test]
    fn requeue_puts_deliveries_back_first_in_order() {
        let mut q = queue_with(&[1, 1, 1, 1]);
        let first = q.take(2, OWNER);
        assert_eq!(seqs(&first), [1, 2]);
        assert_eq!(q.requeue([1], OWNER + 1), 0, "foreign owner");
        assert_eq!(
            q.requeue([2, 1, 7, 2], OWNER),
            2,
            "unknown and repeated seqs are ignored"
        );
        let again = q.take(100, OWNER);
        assert_eq!(seqs(&again), [1, 2, 3, 4]);
        assert!(
            again[0].payload.is_none(),
            "requeued payloads come from disk"
        );
        assert!(again[0].redelivered && !again[2].redelivered);
        assert!(again[2].payload.is_some());
        assert_eq!(q.requeue([3], OWNER), 1);
        assert_eq!(
            q.settle([3], OWNER),
            (vec![], 0),
            "requeued is not in flight"
        );
    }

    #[test]
    fn retaining_queues_keep_payloads_in_flight_and_requeue_by_owner() {
        let mut q = Queue::new(Arc::new(Budget::new(0)), true);
        for seq in 1..=3 {
            q.push_back(seq, 1, Bytes::from(vec![seq as u8]), None);
        }
        let mine = q.take(2, OWNER);
        let theirs = q.take(1, OWNER + 1);
        assert_eq!((seqs(&mine), seqs(&theirs)), (vec![1, 2], vec![3]));
        assert_eq!(q.requeue_owner(OWNER), 2);
        assert!(!q.is_empty());
        let again = q.take(10, OWNER + 1);
        assert_eq!(seqs(&again), [1, 2]);
        let payloads: Vec<Option<Bytes>> = again.into_iter().map(|e| e.payload).collect();
        assert_eq!(
            payloads,
            [Some(Bytes::from(vec![1])), Some(Bytes::from(vec![2]))]
        );
        assert!(q.is_empty());
        assert_eq!(q.requeue_owner(OWNER), 0);
    }
}
