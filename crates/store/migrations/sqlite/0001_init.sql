-- Vigía SQLite schema, version 1.
-- Applied inside one transaction by crates/store/src/sqlite/schema.rs, which then sets
-- PRAGMA user_version = 1. Timestamps are UTC epoch milliseconds (INTEGER).

CREATE TABLE tenants (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    slug       TEXT    NOT NULL UNIQUE,
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- Only the SHA-256 of a key is stored; the key itself never reaches the database.
CREATE TABLE api_keys (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  INTEGER NOT NULL REFERENCES tenants (id),
    name       TEXT    NOT NULL,
    hash       BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32),
    created_at INTEGER NOT NULL
);

-- Metric names are interned so a reading row holds a small integer, not a string.
CREATE TABLE metrics (
    id   INTEGER PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE
);

CREATE TABLE sensors (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  INTEGER NOT NULL REFERENCES tenants (id),
    key        TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    unit       TEXT,
    rules      TEXT    NOT NULL DEFAULT '[]', -- JSON array of vigia_core::Rule
    stock      REAL,
    product    TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (tenant_id, key)
);

-- Time-first key on purpose: new readings arrive with recent timestamps, so inserts
-- append at the right edge of one B-tree instead of dirtying one page per sensor
-- (DESIGN §7: ~820k rows/s time-first vs ~50k sensor-first). The key is also the
-- idempotency guarantee: one row per (sensor, metric, ts).
-- No foreign keys here: the writer checks sensor ids against its cache (see batch.rs),
-- which costs a hash lookup instead of a B-tree probe per row.
CREATE TABLE readings (
    ts        INTEGER NOT NULL,
    sensor_id INTEGER NOT NULL,
    metric_id INTEGER NOT NULL,
    value     REAL    NOT NULL,
    PRIMARY KEY (ts, sensor_id, metric_id)
) WITHOUT ROWID;

CREATE TABLE latest_readings (
    sensor_id INTEGER NOT NULL REFERENCES sensors (id),
    metric_id INTEGER NOT NULL REFERENCES metrics (id),
    ts        INTEGER NOT NULL,
    value     REAL    NOT NULL,
    PRIMARY KEY (sensor_id, metric_id)
) WITHOUT ROWID;

CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   INTEGER NOT NULL REFERENCES tenants (id),
    sensor_id   INTEGER NOT NULL REFERENCES sensors (id),
    rule        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('open', 'acked', 'resolved')),
    metric      TEXT    NOT NULL,
    value       REAL    NOT NULL,
    message     TEXT    NOT NULL,
    opened_at   INTEGER NOT NULL,
    acked_at    INTEGER,
    acked_by    TEXT,
    resolved_at INTEGER,
    resolved_by TEXT
);

-- The database itself guarantees one unresolved alert per (sensor, rule), even with
-- several writers; opening is INSERT ... ON CONFLICT DO NOTHING against this index.
CREATE UNIQUE INDEX alerts_one_unresolved ON alerts (sensor_id, rule)
    WHERE state IN ('open', 'acked');
CREATE INDEX alerts_by_tenant_state ON alerts (tenant_id, state, id);
CREATE INDEX alerts_by_sensor ON alerts (sensor_id, id);
