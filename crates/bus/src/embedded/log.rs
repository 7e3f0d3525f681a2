//! The durable log of the embedded bus: the SQLite file, its schema migrations and every
//! statement run against it. Only the writer thread writes; receivers read payloads that
//! did not fit in memory through a second connection.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

use crate::queue::Queue;
use crate::{BusError, Durability, Topic, TOPIC_COUNT};

/// The schema, one migration per version, append-only: a file records the last one it
/// ran in `user_version` and runs the rest at open.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/embedded/0001_log.sql"),
    include_str!("../../migrations/embedded/0002_topics.sql"),
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Long enough to ride out a checkpoint; the only other connection is our own reader.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The WAL is truncated back to this size after checkpoints, so a burst does not leave
/// a huge file behind.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Turns a SQLite failure into the bus error callers see, naming what was being done.
pub(crate) fn unavailable(context: &str, error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("{context}: {error}"))
}

/// A failure of our own making, in SQLite's error type.
fn failure(message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
        Some(message),
    )
}

/// Opens (creating if needed) the log for writing, in WAL mode with the durability
/// asked, and brings its schema up to [`SCHEMA_VERSION`].
pub(crate) fn open_writer(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(failure(format!(
            "could not switch the bus log to WAL mode (got {mode})"
        )));
    }
    // In WAL mode NORMAL skips the fsync at commit but the commit is still in the OS:
    // it survives kill -9, not power loss. FULL fsyncs the WAL on every commit.
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Os => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Runs the migrations the file has not run yet, each in its own transaction with the
/// version it reaches; refuses a file written by a newer build.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(failure(format!(
            "the bus log has schema version {version}, newer than this build's \
             {SCHEMA_VERSION}: run a newer Vigía or move the file aside"
        )));
    }
    let done = usize::try_from(version).unwrap_or(0);
    for (reached, sql) in (1i64..).zip(MIGRATIONS).skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", reached)?;
        tx.commit()?;
    }
    Ok(())
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
    /// Messages per topic (indexed by [`Topic::index`]).
    pub messages: [u64; TOPIC_COUNT],
    /// Their weight per topic.
    pub weight: [u64; TOPIC_COUNT],
    /// Messages of topics this build does not know (written by a newer one): left in
    /// the file untouched.
    pub unknown: u64,
    /// The id the next published message gets.
    pub next_id: u64,
}

/// Loads every message still in the log into its topic's queue, oldest first: they were
/// published and never acked, so they are delivered again. Payloads beyond the memory
/// budget stay on disk (their bytes are not even read).
pub(crate) fn recover(
    conn: &Connection,
    queues: &mut [Queue; TOPIC_COUNT],
) -> rusqlite::Result<Recovered> {
    let mut stmt =
        conn.prepare("SELECT id, topic, weight, length(payload) FROM messages ORDER BY id")?;
    let mut payload = conn.prepare("SELECT payload FROM messages WHERE id = ?1")?;
    let mut rows = stmt.query([])?;
    let mut found = Recovered {
        messages: [0; TOPIC_COUNT],
        weight: [0; TOPIC_COUNT],
        unknown: 0,
        next_id: 1,
    };
    while let Some(row) = rows.next()? {
        let id = to_u64(row.get(0)?);
        found.next_id = found.next_id.max(id.saturating_add(1));
        let Some(topic) = Topic::from_name(row.get_ref(1)?.as_str().unwrap_or_default()) else {
            found.unknown += 1;
            continue;
        };
        // A negative weight can only come from a damaged file; the payload is still
        // delivered (or rejected) and the lag stays sane.
        let weight = to_u64(row.get(2)?);
        let len = usize::try_from(row.get::<_, i64>(3)?).unwrap_or(usize::MAX);
        let queue = &mut queues[topic.index()];
        let bytes = if queue.has_room(len) {
            let bytes: Vec<u8> = payload.query_row([id_param(id)], |r| r.get(0))?;
            Some(bytes.into())
        } else {
            None
        };
        queue.push_back_recovered(id, weight, bytes);
        found.messages[topic.index()] += 1;
        found.weight[topic.index()] += weight;
    }
    Ok(found)
}

/// Appends one group of published messages, `(topic, weight, payload)`, with
/// consecutive ids starting at `first_id`.
pub(crate) fn append<'a>(
    tx: &Transaction<'_>,
    first_id: u64,
    messages: impl IntoIterator<Item = (Topic, u64, &'a [u8])>,
) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO messages (id, topic, weight, payload) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (offset, (topic, weight, payload)) in (0u64..).zip(messages) {
        insert.execute(params![
            id_param(first_id + offset),
            topic.name(),
            id_param(weight),
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

/// Moves a message that cannot be processed (rejected) into `dead_letters`.
pub(crate) fn quarantine(tx: &Transaction<'_>, id: u64, reason: &str) -> rusqlite::Result<()> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    tx.prepare_cached(
        "INSERT INTO dead_letters (message_id, topic, reason, quarantined_ms, payload)
         SELECT id, topic, ?2, ?3, payload FROM messages WHERE id = ?1",
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

    /// A per-topic array holding `leading` for the first topics and 0 for the rest.
    fn per_topic(leading: &[u64]) -> [u64; TOPIC_COUNT] {
        let mut all = [0; TOPIC_COUNT];
        all[..leading.len()].copy_from_slice(leading);
        all
    }

    fn queues(budget: usize) -> [Queue; TOPIC_COUNT] {
        let budget = std::sync::Arc::new(crate::queue::Budget::new(budget));
        std::array::from_fn(|_| Queue::new(std::sync::Arc::clone(&budget), false))
    }

    fn taken(queue: &mut Queue) -> Vec<(u64, Option<Vec<u8>>)> {
        queue
            .take(usize::MAX, 1)
            .into_iter()
            .map(|e| (e.seq, e.payload.map(|p| p.to_vec())))
            .collect()
    }

    #[test]
    fn recovery_sorts_topics_respects_the_memory_budget_and_finds_the_next_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("bus.sqlite3"), Durability::Os).unwrap();
        let tx = conn.transaction().unwrap();
        let (r, e) = (Topic::READINGS, Topic::EVENTS);
        let messages: [(Topic, u64, &[u8]); 4] = [
            (r, 2, &[1; 6]),
            (e, 1, &[2; 6]),
            (r, 2, &[3; 6]),
            (e, 1, &[4; 6]),
        ];
        append(&tx, 40, messages).unwrap();
        delete_acked(&tx, &mut [42]).unwrap();
        // A topic from a newer build stays in the file, untouched, and keeps its id.
        tx.execute(
            "INSERT INTO messages (id, topic, weight, payload) VALUES (90, 'alarms', 1, x'00')",
            [],
        )
        .unwrap();
        tx.commit().unwrap();

        let mut queues = queues(8);
        let found = recover(&conn, &mut queues).unwrap();
        assert_eq!(
            found,
            Recovered {
                messages: per_topic(&[1, 2]),
                weight: per_topic(&[2, 2]),
                unknown: 1,
                next_id: 91
            }
        );
        assert_eq!(taken(&mut queues[r.index()]), [(40, Some(vec![1; 6]))]);
        assert_eq!(
            taken(&mut queues[e.index()]),
            [(41, None), (43, None)],
            "the budget was spent on the first payload"
        );
        assert_eq!(read_payload(&conn, 43).unwrap(), Some(vec![4; 6]));
        assert_eq!(read_payload(&conn, 42).unwrap(), None);
        let left: i64 = conn
            .query_row("SELECT count(*) FROM messages WHERE id = 90", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(left, 1);
    }

    #[test]
    fn quarantine_moves_the_row_aside_with_its_topic() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("bus.sqlite3"), Durability::Full).unwrap();
        let tx = conn.transaction().unwrap();
        append(&tx, 1, [(Topic::EVENTS, 1u64, &b"junk"[..])]).unwrap();
        quarantine(&tx, 1, "undecodable").unwrap();
        quarantine(&tx, 99, "missing rows are a no-op").unwrap();
        tx.commit().unwrap();
        let left: i64 = conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        let dead: (i64, String, String, Vec<u8>) = conn
            .query_row(
                "SELECT message_id, topic, reason, payload FROM dead_letters",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(left, 0);
        assert_eq!(
            dead,
            (1, "events".into(), "undecodable".into(), b"junk".to_vec())
        );
    }

    /// The schema of the first release, exactly as it created files (no user_version).
    const FIRST_RELEASE_SCHEMA: &str = "
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
        );";

    #[test]
    fn a_first_release_file_migrates_and_its_rows_become_readings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.sqlite3");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(FIRST_RELEASE_SCHEMA).unwrap();
        old.execute_batch(
            "INSERT INTO messages (id, readings, payload) VALUES (7, 3, x'0102');
             INSERT INTO dead_letters (message_id, reason, quarantined_ms, payload)
                 VALUES (5, 'old', 0, x'ff');",
        )
        .unwrap();
        drop(old);

        for _ in 0..2 {
            // The second open finds the file current and changes nothing.
            let conn = open_writer(&path, Durability::Os).unwrap();
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(version, SCHEMA_VERSION);
            let mut queues = queues(usize::MAX);
            let found = recover(&conn, &mut queues).unwrap();
            assert_eq!(
                (found.messages, found.weight),
                (per_topic(&[1]), per_topic(&[3]))
            );
            assert_eq!(
                taken(&mut queues[Topic::READINGS.index()]),
                [(7, Some(vec![1, 2]))]
            );
            let dead: String = conn
                .query_row("SELECT topic FROM dead_letters", [], |r| r.get(0))
                .unwrap();
            assert_eq!(dead, "readings");
        }
    }

    #[test]
    fn a_file_from_a_newer_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.sqlite3");
        drop(open_writer(&path, Durability::Os).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let error = open_writer(&path, Durability::Os).unwrap_err().to_string();
        assert!(error.contains("newer than this build"), "{error}");
    }
}
