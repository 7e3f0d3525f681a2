//! API keys as admins manage them: create (the secret is shown once), list (never the
//! secret), revoke (takes effect at once in every process). Every change is audited.

use std::sync::Arc;

use vigia_core::{ApiKeyId, ApiKeyInfo, Control, Permission, Role, Timestamp};
use vigia_fanout::Fanout;
use vigia_store::{AuditEvent, AuditOutcome, NewApiKey, Store};

use crate::{generate_key, hash_key, AuditTrail, Caller, ServiceError};

/// A key just created: the only time its secret is known.
#[derive(Debug, Clone, PartialEq)]
pub struct NewKey {
    pub info: ApiKeyInfo,
    pub secret: String,
}

/// Longest key name.
pub const MAX_KEY_NAME: usize = 64;

/// Checks a key name: 1 to 64 characters, no control characters.
pub fn validate_key_name(name: &str) -> Result<(), ServiceError> {
    if name.trim().is_empty() || name.chars().count() > MAX_KEY_NAME {
        return Err(ServiceError::invalid_field(
            "the key is invalid; nothing was created",
            "name",
            format!("must be 1 to {MAX_KEY_NAME} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ServiceError::invalid_field(
            "the key is invalid; nothing was created",
            "name",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Keys of the caller's tenant.
pub struct KeyService {
    store: Arc<dyn Store>,
    fanout: Arc<dyn Fanout>,
    audit: Arc<AuditTrail>,
}

impl KeyService {
    pub fn new(store: Arc<dyn Store>, fanout: Arc<dyn Fanout>, audit: Arc<AuditTrail>) -> Self {
        Self {
            store,
            fanout,
            audit,
        }
    }

    /// Creates a key of `role` in the caller's tenant; `client` is the caller's address.
    pub async fn create(
        &self,
        caller: &Caller,
        name: &str,
        role: Role,
        client: &str,
    ) -> Result<NewKey, ServiceError> {
        caller.require(Permission::Administer)?;
        validate_key_name(name)?;
        let secret = generate_key();
        let info = self
            .store
            .catalog()
            .insert_api_key(&NewApiKey {
                tenant: caller.tenant,
                name: name.to_string(),
                role,
                hash: hash_key(&secret),
            })
            .await?;
        self.audit
            .record_now(AuditEvent {
                tenant: Some(caller.tenant),
                actor: caller.actor(),
                action: format!("key.create:{role}"),
                target: format!("key:{}", info.id),
                outcome: AuditOutcome::Allowed,
                client: client.to_string(),
            })
            .await?;
        Ok(NewKey { info, secret })
    }

    /// The tenant's live keys, oldest first.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<ApiKeyInfo>, ServiceError> {
        caller.require(Permission::Administer)?;
        Ok(self.store.catalog().list_api_keys(caller.tenant).await?)
    }

    /// Revokes a key of the caller's tenant; every process stops accepting it at once.
    pub async fn revoke(
        &self,
        caller: &Caller,
        id: ApiKeyId,
        client: &str,
    ) -> Result<(), ServiceError> {
        caller.require(Permission::Administer)?;
        if id == caller.key_id {
            // An admin revoking the key in hand would lock itself out mid-session, and
            // the last admin key would leave the tenant unmanageable.
            return Err(ServiceError::Conflict(
                "this is the key making the request; revoke it with another admin key".into(),
            ));
        }
        let hash = self
            .store
            .catalog()
            .revoke_api_key(caller.tenant, id, Timestamp::now())
            .await
            .map_err(ServiceError::not_found_as(format!(
                "no key {id} in this tenant"
            )))?;
        self.fanout.publish_control(Control::KeyRevoked { hash });
        self.audit
            .record_now(AuditEvent {
                tenant: Some(caller.tenant),
                actor: caller.actor(),
                action: "key.revoke".into(),
                target: format!("key:{id}"),
                outcome: AuditOutcome::Allowed,
                client: client.to_string(),
            })
            .await?;
        Ok(())
    }
}
