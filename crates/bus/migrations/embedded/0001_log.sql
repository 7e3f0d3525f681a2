-- The log as the first release wrote it (without a version number: files from then
-- have user_version 0 and these tables already, hence IF NOT EXISTS).
-- `messages` is the queue itself: a row lives from its publish until its ack.
-- `dead_letters` keeps payloads that could not be decoded, for a person to inspect,
-- instead of wedging consumers on them or dropping them silently.
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
