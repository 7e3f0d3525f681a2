//! Setup and cleanup of `vigia bench alerts`: the benchmark's sensors provisioned
//! before it runs, leftovers of an interrupted earlier run resolved, and the alerts it
//! opened resolved after it — spread over a few connections, none of it timed.

use anyhow::{bail, Context};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use tokio::task::JoinSet;

use super::REQUEST_TIMEOUT;
use crate::http::{Connection, Response, Target};

/// Each benchmark sensor's only rule: any value above 0 is a critical excursion.
pub const SENSOR_SPEC: &str =
    r#"{"kind":"generic","rules":[{"kind":"threshold","max":0,"severity":"critical"}]}"#;
/// Connections used to provision sensors and to clean up.
const SETUP_CONNECTIONS: usize = 4;
/// Most alerts listed per sensor and state when clearing leftovers (the API's maximum).
const LIST_LIMIT: usize = 1000;

/// Setup and cleanup work, spread over a few connections.
#[derive(Debug, Clone)]
pub enum Chore {
    /// PUT the sensor with the benchmark's rule.
    Provision(String),
    /// Resolve the sensor's open and acknowledged alerts.
    ClearStale(String),
    /// Resolve one alert.
    Resolve(i64),
}

#[derive(Deserialize)]
struct AlertId {
    id: i64,
}

/// Runs every chore; returns how many alerts were resolved. Stops at the first failure.
pub async fn run_chores(target: &Target, token: &str, chores: Vec<Chore>) -> anyhow::Result<u64> {
    let mut shares: Vec<Vec<Chore>> = vec![Vec::new(); SETUP_CONNECTIONS];
    for (i, chore) in chores.into_iter().enumerate() {
        shares[i % SETUP_CONNECTIONS].push(chore);
    }
    let mut tasks = JoinSet::new();
    for share in shares.into_iter().filter(|s| !s.is_empty()) {
        let mut conn = Connection::new(target, Some(token), REQUEST_TIMEOUT)?;
        tasks.spawn(async move {
            let mut resolved = 0;
            for chore in &share {
                resolved += do_chore(&mut conn, chore).await?;
            }
            anyhow::Ok(resolved)
        });
    }
    let mut resolved = 0;
    while let Some(done) = tasks.join_next().await {
        // Returning drops the set, which aborts the other tasks.
        resolved += done.context("a setup task failed")??;
    }
    Ok(resolved)
}

async fn do_chore(conn: &mut Connection, chore: &Chore) -> anyhow::Result<u64> {
    match chore {
        Chore::Provision(key) => {
            let path = format!("/api/v1/sensors/{key}");
            let r = conn
                .put_json(&path, Bytes::from_static(SENSOR_SPEC.as_bytes()))
                .await?;
            expect_status(&r, "PUT", &path, &[StatusCode::OK, StatusCode::CREATED])?;
            Ok(0)
        }
        Chore::ClearStale(key) => {
            let mut resolved = 0;
            for state in ["open", "acked"] {
                let path = format!("/api/v1/alerts?sensor={key}&state={state}&limit={LIST_LIMIT}");
                let r = conn.get(&path).await?;
                expect_status(&r, "GET", &path, &[StatusCode::OK])?;
                let ids: Vec<AlertId> = serde_json::from_slice(&r.body)
                    .with_context(|| format!("GET {path}: not a list of alerts"))?;
                for AlertId { id } in ids {
                    resolved += resolve_alert(conn, id).await?;
                }
            }
            Ok(resolved)
        }
        Chore::Resolve(id) => resolve_alert(conn, *id).await,
    }
}

/// Resolves one alert; returns 1 if the server resolved it, 0 if it was gone.
async fn resolve_alert(conn: &mut Connection, id: i64) -> anyhow::Result<u64> {
    let path = format!("/api/v1/alerts/{id}/resolve");
    let r = conn.send(Method::POST, &path, None).await?;
    // Gone already (deleted with its sensor, say) is as good as resolved.
    expect_status(&r, "POST", &path, &[StatusCode::OK, StatusCode::NOT_FOUND])?;
    Ok(u64::from(r.status == StatusCode::OK))
}

fn expect_status(r: &Response, method: &str, path: &str, ok: &[StatusCode]) -> anyhow::Result<()> {
    if ok.contains(&r.status) {
        return Ok(());
    }
    if r.status == StatusCode::UNAUTHORIZED {
        bail!("the token was refused (401): check --token / VIGIA_TOKEN");
    }
    bail!("{method} {path} answered {}: {}", r.status, r.body_text())
}
