-- Vigía SQLite schema: robots (issue 18). Timestamps are UTC epoch milliseconds.
-- Robots, their attempts (robot_executions), the tenants' dispatch turns (robot_turns),
-- modules and module instances. JSON (input, result, schemas) is stored as text.

CREATE TABLE robots (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id           INTEGER NOT NULL REFERENCES tenants (id),
    module              TEXT    NOT NULL,
    input               TEXT    NOT NULL,
    priority            INTEGER NOT NULL,
    status              TEXT    NOT NULL,
    attempt             INTEGER NOT NULL DEFAULT 0,
    progress            INTEGER NOT NULL DEFAULT 0,
    step                TEXT,
    result              TEXT,
    error               TEXT,
    timeout_s           INTEGER,
    idempotency_key     TEXT,
    body_hash           BLOB,
    not_before          INTEGER NOT NULL,
    worker              TEXT,
    lease_expires_at    INTEGER,
    last_progress_at    INTEGER,
    cancel_requested_at INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    finished_at         INTEGER
);

-- One robot per idempotency key and tenant.
CREATE UNIQUE INDEX robots_idempotency ON robots (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Claims read claimable robots by status and not_before; the sweep reads running ones.
CREATE INDEX robots_dispatch ON robots (status, not_before);
CREATE INDEX robots_leases ON robots (lease_expires_at) WHERE status = 'running';
-- Lists page a tenant's robots newest first.
CREATE INDEX robots_by_tenant ON robots (tenant_id, id);
-- Cleanup finds finished robots by age.
CREATE INDEX robots_finished ON robots (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE robot_executions (
    robot_id      INTEGER NOT NULL REFERENCES robots (id),
    attempt       INTEGER NOT NULL,
    worker        TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    started_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    error         TEXT,
    stale_reports INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (robot_id, attempt)
) WITHOUT ROWID;

-- The claim that last served each tenant: tenants take turns in dispatch order.
CREATE TABLE robot_turns (
    tenant_id INTEGER PRIMARY KEY,
    served    INTEGER NOT NULL
);

CREATE TABLE modules (
    name         TEXT    PRIMARY KEY,
    kind         TEXT    NOT NULL,
    input_schema TEXT,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE module_instances (
    module     TEXT    NOT NULL REFERENCES modules (name),
    name       TEXT    NOT NULL,
    url        TEXT,
    weight     REAL    NOT NULL,
    capacity   INTEGER NOT NULL,
    health     TEXT    NOT NULL,
    score      REAL    NOT NULL,
    breaker    TEXT    NOT NULL,
    in_flight  INTEGER NOT NULL,
    checked_at INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (module, name)
);
