//! The durable log of the embedded bus: the SQLite file, its schema and every statement
//! run against it. Only the writer thread writes; receivers read payloads that did not
//! fit in memory through a second connection.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

use super::queue::Queue;
use crate::{BusError, Durability};

/// `messages` is the queue itself: a row lives from its publish until its ack.
/// `dead_letters` keeps payloads that could not be decoded, for a person to inspect,
/// instead of wedging consumers on them or dropping them silently.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    readings INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL,
    reason TEXT NOT NULL,
    quarantined_ms INTEGER NOT NULL,
    payload BLOB NOT NULL
);
";

/// Long enough to ride out a checkpoint; the only other connection is our own reader.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The WAL is truncated back to this size after checkpoints, so a burst does not leave
/// a huge file behind.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Turns a SQLite failure into the bus error callers see, naming what was being done.
pub(crate) fn unavailable(context: &str, error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("{context}: {error}"))
}

/// Opens (creating if needed) the log for writing, in WAL mode with the durability asked.
pub(crate) fn open_writer(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!(
                "could not switch the bus log to WAL mode (got {mode})"
            )),
        ));
    }
    // In WAL mode NORMAL skips the fsync at commit but the commit is still in the OS:
    // it survives kill -9, not power loss. FULL fsyncs the WAL on every commit.
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Os => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Opens a second connection that only reads payloads back.
pub(crate) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    // Read-write flags on purpose: a read-only connection cannot create the WAL index
    // it needs; `query_only` still forbids any write through it.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// What was found in the log at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recovered {
    pub messages: u64,
    pub readings: u64,
    /// The id the next published message gets.
    pub next_id: u64,
}

/// Loads every message still in the log into `queue`, oldest first: they were published
/// and never acked, so they are delivered again. Payloads beyond the memory budget stay
/// on disk (their bytes are not even read).
pub(crate) fn recover(conn: &Connection, queue: &mut Queue) -> rusqlite::Result<Recovered> {
    let mut stmt =
        conn.prepare("SELECT id, readings, length(payload) FROM messages ORDER BY id")?;
    let mut payload = conn.prepare("SELECT payload FROM messages WHERE id = ?1")?;
    let mut rows = stmt.query([])?;
    let mut found = Recovered {
        messages: 0,
        readings: 0,
        next_id: 1,
    };
    while let Some(row) = rows.next()? {
        let id = to_u64(row.get(0)?);
        // A negative count can only come from a damaged file; the payload is still
        // delivered (or quarantined) and the depth stays sane.
        let readings = to_u64(row.get(1)?);
        let len = usize::try_from(row.get::<_, i64>(2)?).unwrap_or(usize::MAX);
        if queue.has_room(len) {
            let bytes: Vec<u8> = payload.query_row([id_param(id)], |r| r.get(0))?;
            queue.push_back(id, readings, bytes);
        } else {
            queue.push_back_on_disk(id, readings);
        }
        found.messages += 1;
        found.readings += readings;
        found.next_id = found.next_id.max(id + 1);
    }
    Ok(found)
}

/// Appends one group of published messages with consecutive ids starting at `first_id`.
pub(crate) fn append<'a>(
    tx: &Transaction<'_>,
    first_id: u64,
    messages: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> rusqlite::Result<()> {
    let mut insert =
        tx.prepare_cached("INSERT INTO messages (id, readings, payload) VALUES (?1, ?2, ?3)")?;
    for (offset, (readings, payload)) in (0u64..).zip(messages) {
        insert.execute(params![
            id_param(first_id + offset),
            id_param(readings),
            payload
        ])?;
    }
    Ok(())
}

/// Deletes acked messages, one statement per run of consecutive ids (acks mostly come
/// in order, so a thousand acks are usually one range).
pub(crate) fn delete_acked(tx: &Transaction<'_>, ids: &mut [u64]) -> rusqlite::Result<()> {
    let mut delete = tx.prepare_cached("DELETE FROM messages WHERE id BETWEEN ?1 AND ?2")?;
    for (low, high) in id_ranges(ids) {
        delete.execute(params![id_param(low), id_param(high)])?;
    }
    Ok(())
}

/// Moves a message that cannot be delivered into `dead_letters`.
pub(crate) fn quarantine(tx: &Transaction<'_>, id: u64, reason: &str) -> rusqlite::Result<()> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    tx.prepare_cached(
        "INSERT INTO dead_letters (message_id, reason, quarantined_ms, payload)
         SELECT id, ?2, ?3, payload FROM messages WHERE id = ?1",
    )?
    .execute(params![id_param(id), reason, now_ms])?;
    tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?
        .execute([id_param(id)])?;
    Ok(())
}

/// Reads one payload back; `None` when the message is no longer in the log.
pub(crate) fn read_payload(conn: &Connection, id: u64) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT payload FROM messages WHERE id = ?1")?
        .query_row([id_param(id)], |row| row.get(0))
        .optional()
}

/// Sorts `ids` and folds them into inclusive runs of consecutive ids.
pub(crate) fn id_ranges(ids: &mut [u64]) -> Vec<(u64, u64)> {
    ids.sort_unstable();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &id in ids.iter() {
        match ranges.last_mut() {
            Some((_, high)) if id <= *high + 1 => *high = (*high).max(id),
            _ => ranges.push((id, id)),
        }
    }
    ranges
}

/// Ids and counts are stored as SQLite integers (i64); ours never get near the limit,
/// so saturating keeps a damaged value from panicking.
fn id_param(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (acked ids, expected inclusive ranges)
    type Case = (&'static [u64], &'static [(u64, u64)]);

    #[test]
    fn acked_ids_fold_into_runs() {
        let cases: &[Case] = &[
            (&[], &[]),
            (&[5], &[(5, 5)]),
            (&[3, 1, 2], &[(1, 3)]),
            (&[1, 2, 4, 5, 9], &[(1, 2), (4, 5), (9, 9)]),
            (&[7, 7, 8, 8], &[(7, 8)]),
            (&[10, 1], &[(1, 1), (10, 10)]),
        ];
        for (ids, expected) in cases {
            let mut ids = ids.to_vec();
            assert_eq!(id_ranges(&mut ids), *expected, "{ids:?}");
        }
    }

    #[test]
    fn recovery_respects_the_memory_budget_and_finds_the_next_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("bus.sqlite3"), Durability::Os).unwrap();
        let tx = conn.transaction().unwrap();
        let payloads: [&[u8]; 3] = [&[1; 6], &[2; 6], &[3; 6]];
        append(&tx, 40, payloads.iter().map(|p| (2u64, *p))).unwrap();
        delete_acked(&tx, &mut [41]).unwrap();
        tx.commit().unwrap();

        let mut queue = Queue::new(8);
        let found = recover(&conn, &mut queue).unwrap();
        assert_eq!(
            found,
            Recovered {
                messages: 2,
                readings: 4,
                next_id: 43
            }
        );
        let taken = queue.take(100);
        let got: Vec<(u64, Option<Vec<u8>>)> =
            taken.into_iter().map(|e| (e.id, e.payload)).collect();
        assert_eq!(got, [(40, Some(vec![1; 6])), (42, None)]);
        assert_eq!(read_payload(&conn, 42).unwrap(), Some(vec![3; 6]));
        assert_eq!(read_payload(&conn, 41).unwrap(), None);
    }

    #[test]
    fn quarantine_moves_the_row_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("bus.sqlite3"), Durability::Full).unwrap();
        let tx = conn.transaction().unwrap();
        append(&tx, 1, [(1u64, &b"junk"[..])]).unwrap();
        quarantine(&tx, 1, "undecodable").unwrap();
        quarantine(&tx, 99, "missing rows are a no-op").unwrap();
        tx.commit().unwrap();
        let left: i64 = conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        let dead: (i64, String, Vec<u8>) = conn
            .query_row(
                "SELECT message_id, reason, payload FROM dead_letters",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(left, 0);
        assert_eq!(dead, (1, "undecodable".to_string(), b"junk".to_vec()));
    }
}
