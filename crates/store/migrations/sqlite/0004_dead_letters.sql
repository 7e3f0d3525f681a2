-- Vigía SQLite schema, version 4: dead letters (issue 12). An ingest batch the store
-- refused for good, with the reason, instead of being retried forever. AUTOINCREMENT:
-- ids are never reused, so a list cursor stays meaningful after deletes.
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   INTEGER NOT NULL REFERENCES tenants (id),
    reason      TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    dead_at     INTEGER NOT NULL,
    readings    INTEGER NOT NULL,
    sensors     TEXT    NOT NULL, -- JSON array: the first distinct sensor keys
    batch       TEXT    NOT NULL  -- JSON array of vigia_core::Reading
);
CREATE INDEX dead_letters_by_tenant ON dead_letters (tenant_id, id);
