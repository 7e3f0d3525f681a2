-- Vigía MariaDB schema: robots (issue 18). Re-runnable (IF NOT EXISTS): MariaDB commits
-- each DDL statement on its own. Timestamps are UTC epoch milliseconds; every integer is
-- BIGINT (one decoder for all); JSON is stored as text; names compare and sort bytewise
-- (utf8mb4_nopad_bin, as every backend). MariaDB has no partial indexes: the unique key
-- on (tenant_id, idempotency_key) lets NULL keys repeat, which is what robots without a
-- key need.

CREATE TABLE IF NOT EXISTS robots (
    id                  BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    tenant_id           BIGINT       NOT NULL,
    module              VARCHAR(100) NOT NULL,
    input               LONGTEXT     NOT NULL,
    priority            BIGINT       NOT NULL,
    status              VARCHAR(32)  NOT NULL,
    attempt             BIGINT       NOT NULL DEFAULT 0,
    progress            BIGINT       NOT NULL DEFAULT 0,
    step                TEXT,
    result              LONGTEXT,
    error               TEXT,
    timeout_s           BIGINT,
    idempotency_key     VARCHAR(200),
    body_hash           VARBINARY(64),
    not_before          BIGINT       NOT NULL,
    worker              VARCHAR(255),
    lease_expires_at    BIGINT,
    last_progress_at    BIGINT,
    cancel_requested_at BIGINT,
    created_at          BIGINT       NOT NULL,
    updated_at          BIGINT       NOT NULL,
    finished_at         BIGINT,
    UNIQUE KEY robots_idempotency (tenant_id, idempotency_key),
    KEY robots_dispatch (status, not_before),
    KEY robots_leases (status, lease_expires_at),
    KEY robots_by_tenant (tenant_id, id),
    KEY robots_finished (finished_at),
    CONSTRAINT robots_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS robot_executions (
    robot_id      BIGINT       NOT NULL,
    attempt       BIGINT       NOT NULL,
    worker        VARCHAR(255) NOT NULL,
    status        VARCHAR(32)  NOT NULL,
    started_at    BIGINT       NOT NULL,
    ended_at      BIGINT,
    error         TEXT,
    stale_reports BIGINT       NOT NULL DEFAULT 0,
    PRIMARY KEY (robot_id, attempt),
    CONSTRAINT robot_executions_robot FOREIGN KEY (robot_id) REFERENCES robots (id)
        ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- The claim that last served each tenant: tenants take turns in dispatch order.
CREATE TABLE IF NOT EXISTS robot_turns (
    tenant_id BIGINT NOT NULL PRIMARY KEY,
    served    BIGINT NOT NULL
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS modules (
    name         VARCHAR(100) NOT NULL PRIMARY KEY,
    kind         VARCHAR(32)  NOT NULL,
    input_schema LONGTEXT,
    updated_at   BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS module_instances (
    module     VARCHAR(100) NOT NULL,
    name       VARCHAR(100) NOT NULL,
    url        TEXT,
    weight     DOUBLE       NOT NULL,
    capacity   BIGINT       NOT NULL,
    health     VARCHAR(16)  NOT NULL,
    score      DOUBLE       NOT NULL,
    breaker    VARCHAR(16)  NOT NULL,
    in_flight  BIGINT       NOT NULL,
    checked_at BIGINT,
    updated_at BIGINT       NOT NULL,
    PRIMARY KEY (module, name),
    CONSTRAINT module_instances_module FOREIGN KEY (module) REFERENCES modules (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
