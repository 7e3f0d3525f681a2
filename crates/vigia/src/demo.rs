//! `--demo`: the seed-000 chambers, provisioned in the default tenant and fed by the
//! same simulator as `vigia simulate`, posting over HTTP to this very server.

use tokio::sync::watch;
use tracing::{info, warn};
use vigia_core::Role;
use vigia_core::{SensorSpec, TenantId};
use vigia_services::{generate_key, hash_key, Bootstrap};
use vigia_store::{NewApiKey, Store};

use crate::config::Config;
use crate::serve::read_token_file;

/// Creates CF-1, CF-2 and REF-3 unless they exist (an operator's later changes stay).
pub async fn provision(store: &dyn Store, tenant: TenantId) -> anyhow::Result<()> {
    for (key, body) in vigia_traffic::simulate::seed_000_sensors() {
        if store.catalog().get_sensor(tenant, &key).await?.is_some() {
            continue;
        }
        let mut spec: SensorSpec = serde_json::from_value(body)?;
        spec.normalise()
            .map_err(|e| anyhow::anyhow!("demo sensor {key} is invalid: {e:?}"))?;
        store
            .catalog()
            .put_sensor(tenant, &key, &spec, "demo", vigia_core::Timestamp::now())
            .await?;
        info!(sensor = %key, "demo sensor provisioned");
    }
    Ok(())
}

/// The key the demo simulator posts with: the bootstrap key when this process knows it
/// (environment or the token file), else a fresh key of its own.
pub async fn simulator_token(
    store: &dyn Store,
    tenant: TenantId,
    config: &Config,
    bootstrap: &Bootstrap,
) -> anyhow::Result<String> {
    if let Bootstrap::Generated { key, .. } = bootstrap {
        return Ok(key.clone());
    }
    if let Some(token) = &config.bootstrap_token {
        if store
            .catalog()
            .find_api_key(hash_key(token))
            .await?
            .is_some()
        {
            return Ok(token.clone());
        }
    }
    if let Some(token) = read_token_file(&config.data_dir) {
        if store
            .catalog()
            .find_api_key(hash_key(&token))
            .await?
            .is_some()
        {
            return Ok(token);
        }
    }
    let key = generate_key();
    store
        .catalog()
        .insert_api_key(&NewApiKey {
            tenant,
            name: "demo-simulator".into(),
            // It only posts readings.
            role: Role::Device,
            hash: hash_key(&key),
        })
        .await?;
    Ok(key)
}

/// Runs the simulator until `stop` turns true.
pub async fn run_simulator(base: String, token: String, mut stop: watch::Receiver<bool>) {
    let args = vigia_traffic::simulate::SimulateArgs {
        // Sensors were provisioned at start (without overwriting an operator's changes).
        provision: false,
        ..vigia_traffic::simulate::SimulateArgs::new(base, token)
    };
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    match vigia_traffic::simulate::simulate(args, stopped).await {
        Ok(report) => info!(?report, "demo simulator stopped"),
        Err(e) => warn!(error = %e, "demo simulator failed"),
    }
}
