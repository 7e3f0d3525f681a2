//! A small pool of read-only connections used from `spawn_blocking`, so reads never
//! block the async runtime and never wait for the writer (WAL readers see the last
//! commit while a new one is being written).

use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::{StoreError, StoreResult};

pub(crate) struct ReadPool {
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection: holding a permit guarantees `idle` is not empty.
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(crate) fn new(connections: Vec<Connection>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(connections.len())),
            idle: Mutex::new(connections),
        }
    }

    /// Runs `f` on a free connection on the blocking pool.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the read pool is closed".into()))?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let lease = Lease {
                conn: pool.lock().pop(),
                pool: &pool,
            };
            let conn = lease
                .conn
                .as_ref()
                .expect("a held permit guarantees an idle connection");
            let result = f(conn);
            drop(lease);
            drop(permit);
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Connection>> {
        // A panic while holding the lock cannot leave the Vec half-updated.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Returns the connection to the pool even if the read panics, so a permit is never
/// left without a connection behind it.
struct Lease<'a> {
    conn: Option<Connection>,
    pool: &'a ReadPool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.lock().push(conn);
        }
    }
}
