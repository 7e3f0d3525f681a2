//! Per-sensor rule state (seed 000's `lastStates`), shared by the workers and the API.
//!
//! Sharded by sensor id so two workers handling different sensors never contend, while
//! two workers handling the same sensor serialise on its shard: that, plus the store's
//! unique open-alert index, is what keeps one alert per excursion.

use std::collections::HashMap;
use std::sync::Mutex;

use vigia_core::SensorId;
use vigia_rules::SensorState;

const SHARDS: usize = 16;

pub struct RuleStates {
    shards: Vec<Mutex<HashMap<SensorId, SensorState>>>,
}

impl Default for RuleStates {
    fn default() -> Self {
        Self::new()
    }
}

impl RuleStates {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, sensor: SensorId) -> &Mutex<HashMap<SensorId, SensorState>> {
        &self.shards[(sensor.0 as u64 % SHARDS as u64) as usize]
    }

    /// Runs `f` with the sensor's state locked (created empty on first use).
    pub fn with<R>(&self, sensor: SensorId, f: impl FnOnce(&mut SensorState) -> R) -> R {
        // A panic while holding the lock leaves at worst one sensor's state stale, which
        // the next readings correct; refusing all further work would be worse.
        let mut shard = self.shard(sensor).lock().unwrap_or_else(|e| e.into_inner());
        f(shard.entry(sensor).or_default())
    }

    /// Puts `state` in place of whatever the sensor had (rebuild from the store).
    pub fn replace(&self, sensor: SensorId, state: SensorState) {
        let mut shard = self.shard(sensor).lock().unwrap_or_else(|e| e.into_inner());
        shard.insert(sensor, state);
    }

    /// Forgets everything about the sensor; its next reading starts from an empty state.
    pub fn remove(&self, sensor: SensorId) {
        let mut shard = self.shard(sensor).lock().unwrap_or_else(|e| e.into_inner());
        shard.remove(&sensor);
    }

    /// Every (sensor, rule) whose alert the state holds for active.
    pub fn open_excursions(&self) -> Vec<(SensorId, String)> {
        let mut open = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (sensor, state) in shard.iter() {
                open.extend(state.open_rules().map(|rule| (*sensor, rule.to_string())));
            }
        }
        open
    }

    /// An operator resolved an alert by hand: the next excursion opens a new one.
    pub fn forget_excursion(&self, sensor: SensorId, rule: &str) {
        self.with(sensor, |state| state.forget_excursion(rule));
    }
}
