-- Vigía SQLite schema, version 2: key roles and revocation, the audit log, leases, the
-- outbox of domain events.

-- Keys made before roles existed were all-powerful: they become `admin`.
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'
    CHECK (role IN ('admin', 'operator', 'viewer', 'device'));
-- A revoked key stays (for the audit trail) but no longer authenticates.
ALTER TABLE api_keys ADD COLUMN revoked_at INTEGER;
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);

-- One row per (tenant, minute, client, actor, action, target, outcome), counted, so a
-- flood of refused requests grows a counter instead of the table. tenant_id 0 stands
-- for "no tenant" (an unidentified caller): NULLs would not be equal in the unique key.
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id INTEGER NOT NULL,
    minute    INTEGER NOT NULL,
    client    TEXT    NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    target    TEXT    NOT NULL,
    outcome   TEXT    NOT NULL CHECK (outcome IN ('allowed', 'refused')),
    count     INTEGER NOT NULL,
    first_at  INTEGER NOT NULL,
    last_at   INTEGER NOT NULL,
    UNIQUE (tenant_id, minute, client, actor, action, target, outcome)
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, minute);

-- Named expiring locks (the scheduler's leader, later partition owners).
CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Domain events, appended in the transaction of the change they describe (the outbox);
-- consumers read after a cursor they keep in outbox_cursors. AUTOINCREMENT: ids are
-- never reused, even after the newest rows are pruned, so a cursor stays meaningful.
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at INTEGER NOT NULL,
    event      BLOB    NOT NULL -- vigia_core::DomainEvent, versioned JSON
);
CREATE INDEX outbox_by_time ON outbox (created_at);

CREATE TABLE outbox_cursors (
    consumer TEXT    PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID;
