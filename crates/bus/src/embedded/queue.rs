//! The in-memory side of the embedded bus: which committed messages wait for a consumer,
//! which are in flight, and how many payload bytes are held in memory.
//!
//! Every message here is already durable in the SQLite file; this structure only decides
//! what to hand out next. A payload that did not fit the memory budget is left out
//! (`None`) and read back from the file when the message is received.

use std::collections::{HashMap, VecDeque};

/// One committed message waiting in the queue or handed out to a consumer.
#[derive(Debug, PartialEq)]
pub(crate) struct Entry {
    pub id: u64,
    pub readings: u64,
    /// The encoded batch, when it fit the memory budget.
    pub payload: Option<Vec<u8>>,
}

/// FIFO of committed messages plus the set of deliveries not yet settled.
#[derive(Debug)]
pub(crate) struct Queue {
    ready: VecDeque<Entry>,
    /// id → readings of every delivery handed out and neither acked nor nacked.
    in_flight: HashMap<u64, u64>,
    /// Bytes of payloads held in `ready` (counted by allocation, not by length).
    payload_bytes: usize,
    budget: usize,
}

impl Queue {
    /// An empty queue that keeps at most `budget` bytes of payloads in memory.
    pub fn new(budget: usize) -> Self {
        Self {
            ready: VecDeque::new(),
            in_flight: HashMap::new(),
            payload_bytes: 0,
            budget,
        }
    }

    /// Appends a committed message; its payload is kept only while the budget allows.
    pub fn push_back(&mut self, id: u64, readings: u64, payload: Vec<u8>) {
        let cost = payload.capacity();
        let payload = if self.has_room(cost) {
            self.payload_bytes += cost;
            Some(payload)
        } else {
            None
        };
        self.ready.push_back(Entry {
            id,
            readings,
            payload,
        });
    }

    /// Appends a committed message whose payload stays in the file only.
    pub fn push_back_on_disk(&mut self, id: u64, readings: u64) {
        self.ready.push_back(Entry {
            id,
            readings,
            payload: None,
        });
    }

    /// Whether a payload of `bytes` would still fit the memory budget.
    pub fn has_room(&self, bytes: usize) -> bool {
        self.payload_bytes.saturating_add(bytes) <= self.budget
    }

    /// Takes messages from the front holding up to `max_readings` readings, but always
    /// at least one, and marks them in flight. Their payloads leave the budget.
    pub fn take(&mut self, max_readings: usize) -> Vec<Entry> {
        let max = max_readings as u64;
        let mut taken = Vec::new();
        let mut readings = 0u64;
        while let Some(front) = self.ready.front() {
            if !taken.is_empty() && readings + front.readings > max {
                break;
            }
            let entry = self
                .ready
                .pop_front()
                .expect("front() just returned an entry");
            readings += entry.readings;
            if let Some(payload) = &entry.payload {
                self.payload_bytes -= payload.capacity();
            }
            self.in_flight.insert(entry.id, entry.readings);
            taken.push(entry);
        }
        taken
    }

    /// Settles in-flight deliveries for good (ack). Returns the ids that were in flight
    /// and their readings; unknown or already settled ids are ignored, so acking twice
    /// never counts twice.
    pub fn settle(&mut self, ids: impl IntoIterator<Item = u64>) -> (Vec<u64>, u64) {
        let mut settled = Vec::new();
        let mut readings = 0;
        for id in ids {
            if let Some(count) = self.in_flight.remove(&id) {
                settled.push(id);
                readings += count;
            }
        }
        (settled, readings)
    }

    /// Puts in-flight deliveries back at the front, oldest first, for redelivery (nack).
    /// Their payloads are read back from the file. Returns how many were requeued.
    pub fn requeue(&mut self, ids: impl IntoIterator<Item = u64>) -> usize {
        let mut back: Vec<(u64, u64)> = ids
            .into_iter()
            .filter_map(|id| self.in_flight.remove(&id).map(|readings| (id, readings)))
            .collect();
        back.sort_unstable();
        back.dedup();
        for &(id, readings) in back.iter().rev() {
            self.ready.push_front(Entry {
                id,
                readings,
                payload: None,
            });
        }
        back.len()
    }

    /// Bytes of payloads currently held in memory.
    #[cfg(test)]
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.id).collect()
    }

    fn queue_with(readings: &[u64]) -> Queue {
        let mut q = Queue::new(usize::MAX);
        for (i, &r) in readings.iter().enumerate() {
            q.push_back(i as u64 + 1, r, vec![0; 4]);
        }
        q
    }

    #[test]
    fn take_respects_max_readings_but_returns_at_least_one() {
        // (readings per message, max_readings, expected ids taken)
        let cases: &[(&[u64], usize, &[u64])] = &[
            (&[1, 1, 1], 2, &[1, 2]),
            (&[3, 3, 3], 5, &[1]),
            (&[3, 3, 3], 6, &[1, 2]),
            (&[10, 1], 1, &[1]),
            (&[10, 1], 0, &[1]),
            (&[0, 0, 2], 1, &[1, 2]),
            (&[1, 1, 1], 100, &[1, 2, 3]),
            (&[], 5, &[]),
        ];
        for (readings, max, expected) in cases {
            let mut q = queue_with(readings);
            assert_eq!(ids(&q.take(*max)), *expected, "{readings:?} max {max}");
        }
    }

    #[test]
    fn payloads_beyond_the_budget_are_left_on_disk() {
        let mut q = Queue::new(10);
        for id in 1..=4 {
            q.push_back(id, 1, Vec::with_capacity(4));
        }
        assert_eq!(q.payload_bytes(), 8);
        let taken = q.take(10);
        let kept: Vec<bool> = taken.iter().map(|e| e.payload.is_some()).collect();
        assert_eq!(kept, [true, true, false, false]);
        assert_eq!(q.payload_bytes(), 0, "taking releases the budget");
        q.push_back(5, 1, Vec::with_capacity(10));
        assert_eq!(q.payload_bytes(), 10);
    }

    #[test]
    fn settle_counts_each_in_flight_delivery_once() {
        let mut q = queue_with(&[2, 3, 4]);
        q.take(100);
        assert_eq!(q.settle([2, 2, 99]), (vec![2], 3));
        assert_eq!(q.settle([2]), (vec![], 0), "second ack is a no-op");
        assert_eq!(q.settle([1, 3]), (vec![1, 3], 6));
    }

    #[test]
    fn requeue_puts_deliveries_back_first_in_id_order() {
        let mut q = queue_with(&[1, 1, 1, 1]);
        let first = q.take(2);
        assert_eq!(ids(&first), [1, 2]);
        assert_eq!(
            q.requeue([2, 1, 7, 2]),
            2,
            "unknown and repeated ids are ignored"
        );
        let again = q.take(100);
        assert_eq!(ids(&again), [1, 2, 3, 4]);
        assert!(
            again[0].payload.is_none(),
            "requeued payloads come from disk"
        );
        assert!(again[2].payload.is_some());
        assert_eq!(q.requeue([3]), 1);
        assert_eq!(
            q.settle([3]),
            (vec![], 0),
            "requeued is no longer in flight"
        );
    }
}
