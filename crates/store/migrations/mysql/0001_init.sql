-- Vigía MySQL/MariaDB schema, version 1: every table of the SQLite migrations 0001 and
-- 0002 (and of postgres/0001_init.sql), in MariaDB types. Applied by
-- crates/store/src/mysql/schema.rs under a named lock, which then records it in
-- schema_migrations. Append-only: a change is a new numbered file, never an edit of this.
--
-- MariaDB commits every DDL statement on its own (DDL is not transactional), so a
-- migration that fails half way leaves the tables it already made: every statement here
-- is written to be re-run (IF NOT EXISTS, upserts), and the next open finishes the job.
--
-- Timestamps are UTC epoch milliseconds (BIGINT), as in SQLite and PostgreSQL.
-- Text that is matched or ordered exactly (slugs, keys, metric and rule names) uses
-- utf8mb4_nopad_bin: byte order, as SQLite compares, and NO PAD, so 'a' and 'a ' are two
-- keys (MariaDB's utf8mb4_bin ignores trailing spaces in comparisons and unique keys).

CREATE TABLE IF NOT EXISTS tenants (
    id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    slug       VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    name       TEXT         CHARACTER SET utf8mb4 NOT NULL,
    created_at BIGINT       NOT NULL,
    UNIQUE KEY tenants_slug (slug)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- Only the SHA-256 of a key is stored; the key itself never reaches the database.
-- A revoked key stays (for the audit trail) but no longer authenticates.
CREATE TABLE IF NOT EXISTS api_keys (
    id         BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    tenant_id  BIGINT      NOT NULL,
    name       TEXT        NOT NULL,
    role       VARCHAR(16) NOT NULL DEFAULT 'admin',
    hash       BINARY(32)  NOT NULL,
    created_at BIGINT      NOT NULL,
    revoked_at BIGINT,
    UNIQUE KEY api_keys_hash (hash),
    KEY api_keys_by_tenant (tenant_id, id),
    CONSTRAINT api_keys_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    CONSTRAINT api_keys_role CHECK (role IN ('admin', 'operator', 'viewer', 'device')),
    CONSTRAINT api_keys_hash_length CHECK (octet_length(hash) = 32)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- Metric names are interned so a reading row holds a small integer, not a string.
CREATE TABLE IF NOT EXISTS metrics (
    id   BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    UNIQUE KEY metrics_name (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- `key` is a reserved word in MariaDB: always written with backquotes.
CREATE TABLE IF NOT EXISTS sensors (
    id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    tenant_id  BIGINT       NOT NULL,
    `key`      VARCHAR(255) NOT NULL,
    name       TEXT         NOT NULL,
    kind       VARCHAR(32)  NOT NULL,
    unit       TEXT,
    rules      LONGTEXT     NOT NULL DEFAULT '[]', -- JSON array of vigia_core::Rule
    stock      DOUBLE,
    product    TEXT,
    created_at BIGINT       NOT NULL,
    updated_at BIGINT       NOT NULL,
    UNIQUE KEY sensors_tenant_key (tenant_id, `key`),
    CONSTRAINT sensors_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    CONSTRAINT sensors_rules_json CHECK (json_valid(rules))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- Time-first clustered key, as in SQLite and PostgreSQL: new readings append at the right
-- edge of one B-tree, and the key is the idempotency guarantee (one row per sensor,
-- metric and instant). No foreign keys: the store checks sensor ids against its cache
-- before writing. Not partitioned (the PostgreSQL store is): MariaDB partitioning would
-- forbid the foreign keys of the other tables and buys nothing at these sizes yet.
CREATE TABLE IF NOT EXISTS readings (
    ts        BIGINT NOT NULL,
    sensor_id BIGINT NOT NULL,
    metric_id BIGINT NOT NULL,
    value     DOUBLE NOT NULL,
    PRIMARY KEY (ts, sensor_id, metric_id)
) ENGINE = InnoDB;

-- No foreign key to sensors, unlike SQLite/PostgreSQL: InnoDB checks a foreign key with
-- a SHARED lock on the parent row, held to commit, so a batch (which writes here before
-- it takes the outbox lock) and a put_sensor (outbox lock, then an exclusive lock on the
-- sensor row) could deadlock. The store checks sensor ids before writing, as for readings.
CREATE TABLE IF NOT EXISTS latest_readings (
    sensor_id BIGINT NOT NULL,
    metric_id BIGINT NOT NULL,
    ts        BIGINT NOT NULL,
    value     DOUBLE NOT NULL,
    PRIMARY KEY (sensor_id, metric_id),
    CONSTRAINT latest_readings_metric FOREIGN KEY (metric_id) REFERENCES metrics (id)
) ENGINE = InnoDB;

-- MariaDB has no partial index, so "one unresolved alert per (sensor, rule)" is a UNIQUE
-- key over (sensor_id, rule, unresolved), where `unresolved` is a generated column that is
-- 1 while the alert is open or acked and NULL once it is resolved: NULLs never collide in
-- a unique key, so any number of resolved alerts may share (sensor, rule), and a second
-- unresolved one is refused by the database itself (duplicate-key error 1062), whatever
-- the number of writers.
CREATE TABLE IF NOT EXISTS alerts (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    tenant_id   BIGINT       NOT NULL,
    sensor_id   BIGINT       NOT NULL,
    rule        VARCHAR(255) NOT NULL,
    kind        VARCHAR(32)  NOT NULL,
    severity    VARCHAR(32)  NOT NULL,
    state       VARCHAR(16)  NOT NULL,
    metric      VARCHAR(255) NOT NULL,
    value       DOUBLE       NOT NULL,
    message     TEXT         NOT NULL,
    opened_at   BIGINT       NOT NULL,
    acked_at    BIGINT,
    acked_by    TEXT,
    resolved_at BIGINT,
    resolved_by TEXT,
    unresolved  TINYINT AS (IF(state IN ('open', 'acked'), 1, NULL)) PERSISTENT,
    UNIQUE KEY alerts_one_unresolved (sensor_id, rule, unresolved),
    KEY alerts_by_tenant_state (tenant_id, state, id),
    KEY alerts_by_sensor (sensor_id, id),
    CONSTRAINT alerts_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    CONSTRAINT alerts_sensor FOREIGN KEY (sensor_id) REFERENCES sensors (id),
    CONSTRAINT alerts_state CHECK (state IN ('open', 'acked', 'resolved'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- One row per (tenant, minute, client, actor, action, target, outcome), counted. tenant_id
-- 0 stands for "no tenant". The seven columns are too wide for one InnoDB key (3,072
-- bytes), so the unique key is over `identity`, the SHA-256 of their JSON array (JSON
-- escapes every string, so two different tuples never share a text), a generated column.
CREATE TABLE IF NOT EXISTS audit_log (
    id        BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    tenant_id BIGINT      NOT NULL,
    minute    BIGINT      NOT NULL,
    client    TEXT        NOT NULL,
    actor     TEXT        NOT NULL,
    action    TEXT        NOT NULL,
    target    TEXT        NOT NULL,
    outcome   VARCHAR(16) NOT NULL,
    count     BIGINT      NOT NULL,
    first_at  BIGINT      NOT NULL,
    last_at   BIGINT      NOT NULL,
    identity  BINARY(32) AS (UNHEX(SHA2(JSON_ARRAY(tenant_id, minute, client, actor, action,
        target, outcome), 256))) PERSISTENT,
    UNIQUE KEY audit_log_identity (identity),
    KEY audit_log_by_tenant (tenant_id, minute),
    CONSTRAINT audit_log_outcome CHECK (outcome IN ('allowed', 'refused'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- Named expiring locks (the scheduler's leader, later partition owners).
CREATE TABLE IF NOT EXISTS leases (
    name       VARCHAR(255) NOT NULL PRIMARY KEY,
    holder     TEXT         NOT NULL,
    expires_at BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- Domain events, appended in the transaction of the change they describe. AUTO_INCREMENT
-- ids are handed out at insert but visible at commit; writers lock the `outbox` row of
-- store_locks first, so ids also commit in increasing order and a consumer's cursor never
-- skips an event committed late (see mysql/queries.rs).
CREATE TABLE IF NOT EXISTS outbox (
    id         BIGINT     NOT NULL AUTO_INCREMENT PRIMARY KEY,
    created_at BIGINT     NOT NULL,
    event      LONGBLOB   NOT NULL, -- vigia_core::DomainEvent, versioned JSON
    KEY outbox_by_time (created_at)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS outbox_cursors (
    consumer VARCHAR(255) NOT NULL PRIMARY KEY,
    position BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- Rows whose only use is `SELECT … FOR UPDATE`: a lock that lives exactly as long as the
-- transaction (GET_LOCK is per session, and would outlive a failed transaction on a
-- pooled connection). PostgreSQL uses transaction-scoped advisory locks instead.
CREATE TABLE IF NOT EXISTS store_locks (
    name VARCHAR(64) NOT NULL PRIMARY KEY
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
INSERT INTO store_locks (name) VALUES ('outbox') ON DUPLICATE KEY UPDATE name = name;
