//! The alert lifecycle of people: list, read, acknowledge, resolve by hand. Each action
//! is one store transaction; then the workers forget a resolved excursion (so the next
//! out-of-range reading opens a new alert) and live subscribers hear of the change.

use std::sync::Arc;

use vigia_core::{Alert, AlertChange, AlertId, Control, LiveEvent, Permission, Timestamp};
use vigia_fanout::Fanout;
use vigia_store::{AlertFilter, Store};

use crate::{Caller, Page, ServiceError};

/// Alerts of the caller's tenant.
pub struct AlertService {
    store: Arc<dyn Store>,
    fanout: Arc<dyn Fanout>,
}

impl AlertService {
    pub fn new(store: Arc<dyn Store>, fanout: Arc<dyn Fanout>) -> Self {
        Self { store, fanout }
    }

    /// Alerts, newest first.
    /// One page of the tenant's alerts, newest first (`filter.before` continues a list).
    pub async fn list(
        &self,
        caller: &Caller,
        filter: &AlertFilter,
    ) -> Result<Page<Alert>, ServiceError> {
        caller.require(Permission::Read)?;
        let limit = filter.limit;
        let one_more = AlertFilter {
            limit: limit.saturating_add(1),
            ..filter.clone()
        };
        let mut items = self.store.alerts().list(caller.tenant, &one_more).await?;
        let has_more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, has_more })
    }

    pub async fn get(&self, caller: &Caller, id: AlertId) -> Result<Alert, ServiceError> {
        caller.require(Permission::Read)?;
        self.store
            .alerts()
            .get(caller.tenant, id)
            .await
            .map_err(ServiceError::not_found_as(no_alert(id)))
    }

    /// Open → acked (someone is on it); acking twice is harmless, a resolved alert is a
    /// conflict.
    pub async fn ack(&self, caller: &Caller, id: AlertId) -> Result<Alert, ServiceError> {
        caller.require(Permission::Operate)?;
        let alert = self
            .store
            .alerts()
            .ack(caller.tenant, id, &caller.key_name, Timestamp::now())
            .await
            .map_err(ServiceError::not_found_as(no_alert(id)))?;
        self.announce(AlertChange::Acked, &alert);
        Ok(alert)
    }

    /// Open or acked → resolved by hand; resolving twice is harmless.
    pub async fn resolve(&self, caller: &Caller, id: AlertId) -> Result<Alert, ServiceError> {
        caller.require(Permission::Operate)?;
        let alert = self
            .store
            .alerts()
            .resolve(caller.tenant, id, &caller.key_name, Timestamp::now())
            .await
            .map_err(ServiceError::not_found_as(no_alert(id)))?;
        self.fanout.publish_control(Control::ExcursionForgotten {
            sensor: alert.sensor_id,
            rule: alert.rule.clone(),
        });
        self.announce(AlertChange::Resolved, &alert);
        Ok(alert)
    }

    fn announce(&self, change: AlertChange, alert: &Alert) {
        self.fanout.publish_live(LiveEvent::Alert {
            tenant: alert.tenant,
            change,
            alert: Box::new(alert.clone()),
        });
    }
}

fn no_alert(id: AlertId) -> String {
    format!("no alert {id} in this tenant")
}
