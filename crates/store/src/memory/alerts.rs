//! Alerts in memory, with the one-unresolved-per-(sensor, rule) index, and the alerts
//! port over them.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use vigia_core::{Alert, AlertChange, AlertId, AlertState, Sensor, SensorId, TenantId, Timestamp};

use super::catalog::IdCounter;
use super::VolatileStore;
use crate::{AlertFilter, AlertRepo, NewAlert, SensorScope, StoreError, StoreResult};

/// The alerts table and its indexes.
#[derive(Default)]
pub(super) struct Alerts {
    /// Alerts as the API shows them: the sensor key is copied in at opening (keys never
    /// change), so reads need no join.
    rows: BTreeMap<AlertId, Alert>,
    /// (tenant, id): a tenant's listing, newest first, is a backwards range.
    by_tenant: BTreeSet<(TenantId, AlertId)>,
    /// Sensor → rule → its open or acked alert: SQLite's partial unique index, the
    /// guarantee of one unresolved alert per (sensor, rule). Nested so a lookup by
    /// `&str` rule needs no owned key; a sensor with none has no entry.
    unresolved: BTreeMap<SensorId, BTreeMap<String, AlertId>>,
    ids: IdCounter,
}

impl Alerts {
    /// Whether the sensor has an open or acked alert (retention keeps its rows).
    pub(super) fn has_unresolved(&self, sensor: SensorId) -> bool {
        self.unresolved.contains_key(&sensor)
    }

    fn get(&self, tenant: TenantId, id: AlertId) -> StoreResult<&Alert> {
        self.rows
            .get(&id)
            .filter(|a| a.tenant == tenant)
            .ok_or(StoreError::NotFound)
    }

    /// Opens an alert unless one is open or acked for (sensor, rule); `None` when one
    /// already was. The caller has checked the sensor belongs to the tenant.
    pub(super) fn open(&mut self, new: &NewAlert, sensor_key: &str) -> Option<Alert> {
        let rules = self.unresolved.entry(new.sensor).or_default();
        if rules.contains_key(&new.rule) {
            return None;
        }
        let alert = Alert {
            id: AlertId(self.ids.next()),
            tenant: new.tenant,
            sensor_id: new.sensor,
            sensor: sensor_key.to_string(),
            rule: new.rule.clone(),
            kind: new.kind,
            severity: new.severity,
            state: AlertState::Open,
            metric: new.metric.clone(),
            value: new.value,
            message: new.message.clone(),
            opened_at: new.opened_at,
            acked_at: None,
            acked_by: None,
            resolved_at: None,
            resolved_by: None,
            details: new.details.clone(),
        };
        rules.insert(alert.rule.clone(), alert.id);
        self.by_tenant.insert((alert.tenant, alert.id));
        self.rows.insert(alert.id, alert.clone());
        Some(alert)
    }

    /// Resolves the unresolved alert of (sensor, rule) of the tenant as `auto`; `None`
    /// when there is none.
    pub(super) fn auto_resolve(
        &mut self,
        tenant: TenantId,
        sensor: SensorId,
        rule: &str,
        at: Timestamp,
    ) -> Option<Alert> {
        let id = *self.unresolved.get(&sensor)?.get(rule)?;
        if self.rows.get(&id)?.tenant != tenant {
            return None;
        }
        self.set_resolved(id, "auto", at)
    }

    /// Open or acked → resolved by `by`, dropping it from the unresolved index.
    fn set_resolved(&mut self, id: AlertId, by: &str, at: Timestamp) -> Option<Alert> {
        let alert = self.rows.get_mut(&id)?;
        alert.state = AlertState::Resolved;
        alert.resolved_at = Some(at);
        alert.resolved_by = Some(by.to_string());
        if let Some(rules) = self.unresolved.get_mut(&alert.sensor_id) {
            rules.remove(&alert.rule);
            if rules.is_empty() {
                self.unresolved.remove(&alert.sensor_id);
            }
        }
        Some(alert.clone())
    }

    /// Open → acked; acked stays as it is; resolved is a `Conflict`.
    fn ack(
        &mut self,
        tenant: TenantId,
        id: AlertId,
        by: &str,
        at: Timestamp,
    ) -> StoreResult<Alert> {
        self.get(tenant, id)?;
        let alert = self.rows.get_mut(&id).ok_or(StoreError::NotFound)?;
        match alert.state {
            AlertState::Acked => {}
            AlertState::Resolved => {
                return Err(StoreError::Conflict(format!(
                    "alert {id} is already resolved"
                )))
            }
            AlertState::Open => {
                alert.state = AlertState::Acked;
                alert.acked_at = Some(at);
                alert.acked_by = Some(by.to_string());
            }
        }
        Ok(alert.clone())
    }

    /// Open or acked → resolved by `by`; resolved stays as it is.
    fn resolve(
        &mut self,
        tenant: TenantId,
        id: AlertId,
        by: &str,
        at: Timestamp,
    ) -> StoreResult<Alert> {
        let alert = self.get(tenant, id)?;
        if alert.state == AlertState::Resolved {
            return Ok(alert.clone());
        }
        self.set_resolved(id, by, at).ok_or(StoreError::NotFound)
    }

    /// Resolves, as `by`, the sensor's unresolved alerts whose rule the sensor no longer
    /// has, oldest first.
    pub(super) fn resolve_removed_rules(
        &mut self,
        sensor: &Sensor,
        by: &str,
        at: Timestamp,
    ) -> Vec<Alert> {
        let mut removed: Vec<AlertId> = self
            .unresolved
            .get(&sensor.id)
            .into_iter()
            .flatten()
            .filter(|(rule, _)| !sensor.rules.iter().any(|r| &r.name == *rule))
            .map(|(_, &id)| id)
            .collect();
        removed.sort_unstable();
        removed
            .into_iter()
            .filter_map(|id| self.set_resolved(id, by, at))
            .collect()
    }

    /// The tenant's alerts matching the filter, newest first.
    fn list(&self, tenant: TenantId, filter: &AlertFilter) -> Vec<Alert> {
        self.by_tenant
            .range((tenant, AlertId(i64::MIN))..=(tenant, AlertId(i64::MAX)))
            .rev()
            .filter_map(|(_, id)| self.rows.get(id))
            .filter(|a| filter.state.is_none_or(|state| a.state == state))
            .filter(|a| filter.sensor.as_deref().is_none_or(|key| a.sensor == key))
            .filter(|a| filter.before.is_none_or(|before| a.id < before))
            .take(filter.limit)
            .cloned()
            .collect()
    }

    /// Open and acked alerts of every tenant, by id.
    fn unresolved(&self) -> Vec<Alert> {
        let mut ids: Vec<AlertId> = self
            .unresolved
            .values()
            .flat_map(|r| r.values())
            .copied()
            .collect();
        ids.sort_unstable();
        ids.iter()
            .filter_map(|id| self.rows.get(id))
            .cloned()
            .collect()
    }

    /// Open plus acked alerts per sensor of the tenant (or of the sensors in `within`),
    /// by sensor id; sensors without any are absent.
    fn unresolved_counts(
        &self,
        tenant: TenantId,
        within: Option<&BTreeSet<SensorId>>,
    ) -> Vec<(SensorId, u64)> {
        let sensors: Box<dyn Iterator<Item = _>> = match within {
            Some(ids) => Box::new(ids.iter().filter_map(|s| self.unresolved.get_key_value(s))),
            None => Box::new(self.unresolved.iter()),
        };
        sensors
            .filter_map(|(&sensor, rules)| {
                // Every alert of a sensor has the sensor's tenant.
                let count = rules
                    .values()
                    .filter(|id| self.rows.get(id).is_some_and(|a| a.tenant == tenant))
                    .count() as u64;
                (count > 0).then_some((sensor, count))
            })
            .collect()
    }
}

#[async_trait]
impl AlertRepo for VolatileStore {
    async fn list(&self, tenant: TenantId, filter: &AlertFilter) -> StoreResult<Vec<Alert>> {
        Ok(self.read()?.alerts.list(tenant, filter))
    }

    async fn get(&self, tenant: TenantId, id: AlertId) -> StoreResult<Alert> {
        self.read()?.alerts.get(tenant, id).cloned()
    }

    async fn ack(
        &self,
        tenant: TenantId,
        id: AlertId,
        by: &str,
        at: Timestamp,
    ) -> StoreResult<Alert> {
        let mut data = self.write()?;
        let before = data.alerts.get(tenant, id)?.state;
        let alert = data.alerts.ack(tenant, id, by, at)?;
        if alert.state != before {
            data.outbox.alert_changed(AlertChange::Acked, &alert, at);
        }
        Ok(alert)
    }

    async fn resolve(
        &self,
        tenant: TenantId,
        id: AlertId,
        by: &str,
        at: Timestamp,
    ) -> StoreResult<Alert> {
        let mut data = self.write()?;
        let before = data.alerts.get(tenant, id)?.state;
        let alert = data.alerts.resolve(tenant, id, by, at)?;
        if alert.state != before {
            data.outbox.alert_changed(AlertChange::Resolved, &alert, at);
        }
        Ok(alert)
    }

    async fn unresolved(&self) -> StoreResult<Vec<Alert>> {
        Ok(self.read()?.alerts.unresolved())
    }

    async fn unresolved_counts(
        &self,
        tenant: TenantId,
        scope: &SensorScope,
    ) -> StoreResult<Vec<(SensorId, u64)>> {
        let data = self.read()?;
        let within = data.catalog.sensors_in(tenant, scope);
        Ok(data.alerts.unresolved_counts(tenant, within.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use vigia_core::{RuleKind, Severity};

    use super::*;

    fn new_alert(sensor: i64, rule: &str) -> NewAlert {
        NewAlert {
            tenant: TenantId(1),
            sensor: SensorId(sensor),
            rule: rule.into(),
            kind: RuleKind::Threshold,
            severity: Severity::Warning,
            metric: "temperature".into(),
            value: 1.0,
            message: "m".into(),
            opened_at: Timestamp(0),
            details: None,
        }
    }

    #[test]
    fn the_unresolved_index_follows_every_transition() {
        let mut alerts = Alerts::default();
        let a = alerts.open(&new_alert(1, "a"), "S1").expect("opens");
        assert!(
            alerts.open(&new_alert(1, "a"), "S1").is_none(),
            "one per rule"
        );
        let b = alerts.open(&new_alert(1, "b"), "S1").expect("other rule");
        alerts
            .ack(TenantId(1), a.id, "ana", Timestamp(1))
            .expect("ack");
        assert!(
            alerts.open(&new_alert(1, "a"), "S1").is_none(),
            "acked blocks too"
        );
        assert_eq!(
            alerts.unresolved_counts(TenantId(1), None),
            [(SensorId(1), 2)]
        );

        alerts
            .resolve(TenantId(1), b.id, "ana", Timestamp(2))
            .expect("resolve");
        assert!(
            alerts
                .auto_resolve(TenantId(1), SensorId(1), "b", Timestamp(3))
                .is_none(),
            "already resolved by hand"
        );
        assert!(
            alerts
                .auto_resolve(TenantId(2), SensorId(1), "a", Timestamp(3))
                .is_none(),
            "another tenant's alert is not touched"
        );
        let resolved = alerts
            .auto_resolve(TenantId(1), SensorId(1), "a", Timestamp(4))
            .expect("auto");
        assert_eq!(
            (
                resolved.state,
                resolved.resolved_by.as_deref(),
                resolved.acked_by.as_deref()
            ),
            (AlertState::Resolved, Some("auto"), Some("ana"))
        );
        assert!(
            alerts.unresolved.is_empty(),
            "no empty per-sensor maps are left"
        );
        assert!(alerts.unresolved_counts(TenantId(1), None).is_empty());
        let again = alerts.open(&new_alert(1, "a"), "S1").expect("reopens");
        assert!(again.id > b.id, "a new alert, with a new id");
    }
}
