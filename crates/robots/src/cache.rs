//! The seed's `CacheManager` for the balancer: instance health and scores kept for a time
//! that depends on the kind of data ("dynamic TTL": health 30 s, scores 5 min), over a clock
//! the caller passes in, so a cache miss (and the store read behind it) happens at most once
//! per TTL per instance.
//!
//! Not `moka`: its clock cannot be injected, and the entries here are few (one per instance
//! and kind). The map is still bounded: past `max_entries` the entry closest to expiry goes.

use std::collections::HashMap;

use crate::ConfigError;

/// What a cached value is; each kind has its own TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataKind {
    /// An instance's health: changes when a probe says so, read on every dispatch.
    Health,
    /// An instance's score as the score loop computed it.
    Score,
}

/// TTL per [`DataKind`], in ms, and the bound on entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTtls {
    /// Default 30,000 (30 s).
    pub health_ms: i64,
    /// Default 300,000 (5 min).
    pub score_ms: i64,
    /// Entries kept at most. Default 10,000.
    pub max_entries: usize,
}

impl Default for CacheTtls {
    fn default() -> Self {
        Self {
            health_ms: 30_000,
            score_ms: 300_000,
            max_entries: 10_000,
        }
    }
}

impl CacheTtls {
    /// Checks that every TTL is positive (0 would make the cache useless: every lookup a
    /// store read).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.health_ms <= 0 {
            return Err(ConfigError::new("cache", "health_ms", "must be positive"));
        }
        if self.score_ms <= 0 {
            return Err(ConfigError::new("cache", "score_ms", "must be positive"));
        }
        Ok(())
    }

    /// The TTL of `kind`, ms.
    pub fn ttl_ms(&self, kind: DataKind) -> i64 {
        match kind {
            DataKind::Health => self.health_ms,
            DataKind::Score => self.score_ms,
        }
    }
}

/// Hits and misses since the cache was made, for `vigia_robots_cache_{hits,misses}_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that found nothing, or an expired entry.
    pub misses: u64,
}

#[derive(Debug, Clone)]
struct Entry<V> {
    value: V,
    expires_at: i64,
}

/// A TTL cache keyed by data kind and instance name.
#[derive(Debug, Clone)]
pub struct ScoreCache<V> {
    ttls: CacheTtls,
    entries: HashMap<(DataKind, String), Entry<V>>,
    stats: CacheStats,
}

impl<V: Clone> ScoreCache<V> {
    /// An empty cache.
    pub fn new(ttls: CacheTtls) -> Self {
        Self {
            ttls,
            entries: HashMap::new(),
            stats: CacheStats::default(),
        }
    }

    /// The value cached for (`kind`, `key`) if it has not expired at `now`. An expired entry
    /// is dropped and counts as a miss.
    pub fn get(&mut self, kind: DataKind, key: &str, now: i64) -> Option<V> {
        let id = (kind, key.to_owned());
        match self.entries.get(&id) {
            Some(entry) if now < entry.expires_at => {
                self.stats.hits += 1;
                Some(entry.value.clone())
            }
            Some(_) => {
                self.entries.remove(&id);
                self.stats.misses += 1;
                None
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Caches `value` for (`kind`, `key`) from `now` for the kind's TTL, replacing what was
    /// there. When full, expired entries go first, then the one closest to expiry.
    pub fn put(&mut self, kind: DataKind, key: &str, value: V, now: i64) {
        let id = (kind, key.to_owned());
        if !self.entries.contains_key(&id) && self.entries.len() >= self.ttls.max_entries {
            self.entries.retain(|_, entry| now < entry.expires_at);
            if self.entries.len() >= self.ttls.max_entries {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.expires_at)
                    .map(|(id, _)| id.clone());
                if let Some(soonest) = soonest {
                    self.entries.remove(&soonest);
                }
            }
        }
        if self.ttls.max_entries == 0 {
            return;
        }
        let expires_at = now.saturating_add(self.ttls.ttl_ms(kind));
        self.entries.insert(id, Entry { value, expires_at });
    }

    /// Forgets (`kind`, `key`): the next lookup reads the store (a probe changed health, an
    /// instance was removed).
    pub fn invalidate(&mut self, kind: DataKind, key: &str) {
        self.entries.remove(&(kind, key.to_owned()));
    }

    /// Forgets every kind cached for `key`.
    pub fn invalidate_instance(&mut self, key: &str) {
        self.entries.retain(|(_, name), _| name != key);
    }

    /// Drops expired entries (the daily cleanup's "clean cache"); returns how many went.
    pub fn purge_expired(&mut self, now: i64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, entry| now < entry.expires_at);
        before - self.entries.len()
    }

    /// Entries held, expired ones included until a lookup or purge drops them.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataKind::{Health, Score};

    #[derive(Debug, Clone, Copy)]
    enum Step {
        Put(DataKind, &'static str, u32, i64),
        /// Lookup at a time must find this.
        Get(DataKind, &'static str, i64, Option<u32>),
        Invalidate(DataKind, &'static str),
        InvalidateInstance(&'static str),
        Purge(i64, usize),
    }
    use Step::*;

    #[test]
    fn ttls_per_kind() {
        let ttls = CacheTtls::default();
        #[rustfmt::skip]
        let cases: &[(&str, &[Step])] = &[
            ("miss when empty", &[Get(Health, "a", 0, None)]),
            ("hit within the TTL", &[Put(Health, "a", 1, 0), Get(Health, "a", 29_999, Some(1))]),
            ("health expires after 30 s", &[Put(Health, "a", 1, 0), Get(Health, "a", 30_000, None)]),
            ("scores live 5 min", &[
                Put(Score, "a", 7, 0), Get(Score, "a", 299_999, Some(7)), Get(Score, "a", 300_000, None),
            ]),
            ("kinds and names are separate keys", &[
                Put(Health, "a", 1, 0), Put(Score, "a", 2, 0), Put(Health, "b", 3, 0),
                Get(Health, "a", 1, Some(1)), Get(Score, "a", 1, Some(2)), Get(Health, "b", 1, Some(3)),
                Get(Score, "b", 1, None),
            ]),
            ("a put restarts the TTL", &[
                Put(Health, "a", 1, 0), Put(Health, "a", 2, 20_000), Get(Health, "a", 49_999, Some(2)),
            ]),
            ("invalidate one kind", &[
                Put(Health, "a", 1, 0), Put(Score, "a", 2, 0), Invalidate(Health, "a"),
                Get(Health, "a", 1, None), Get(Score, "a", 1, Some(2)),
            ]),
            ("invalidate an instance", &[
                Put(Health, "a", 1, 0), Put(Score, "a", 2, 0), Put(Score, "b", 3, 0),
                InvalidateInstance("a"), Get(Health, "a", 1, None), Get(Score, "a", 1, None),
                Get(Score, "b", 1, Some(3)),
            ]),
            ("purge drops only expired entries", &[
                Put(Health, "a", 1, 0), Put(Score, "a", 2, 0), Purge(30_000, 1),
                Get(Score, "a", 30_000, Some(2)),
            ]),
        ];
        for (name, steps) in cases {
            let mut cache = ScoreCache::new(ttls.clone());
            let (mut hits, mut misses) = (0, 0);
            for (index, step) in steps.iter().enumerate() {
                match *step {
                    Put(kind, key, value, at) => cache.put(kind, key, value, at),
                    Get(kind, key, at, expected) => {
                        assert_eq!(cache.get(kind, key, at), expected, "{name}, step {index}");
                        if expected.is_some() {
                            hits += 1
                        } else {
                            misses += 1
                        }
                    }
                    Invalidate(kind, key) => cache.invalidate(kind, key),
                    InvalidateInstance(key) => cache.invalidate_instance(key),
                    Purge(at, dropped) => assert_eq!(cache.purge_expired(at), dropped, "{name}"),
                }
            }
            assert_eq!(cache.stats(), CacheStats { hits, misses }, "{name}");
        }
    }

    #[test]
    fn bounded() {
        let mut cache = ScoreCache::new(CacheTtls {
            max_entries: 2,
            ..CacheTtls::default()
        });
        cache.put(Health, "a", 1, 0); // expires 30 s
        cache.put(Score, "b", 2, 0); // expires 300 s
        cache.put(Score, "c", 3, 10); // full: "a" is closest to expiry and goes
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(Health, "a", 10), None);
        assert_eq!(cache.get(Score, "b", 10), Some(2));
        assert_eq!(cache.get(Score, "c", 10), Some(3));
        cache.put(Score, "c", 4, 20); // a replacement evicts nothing
        assert_eq!(cache.get(Score, "b", 20), Some(2));
        let mut none = ScoreCache::new(CacheTtls {
            max_entries: 0,
            ..CacheTtls::default()
        });
        none.put(Health, "a", 1, 0);
        assert!(none.is_empty());
    }
}
