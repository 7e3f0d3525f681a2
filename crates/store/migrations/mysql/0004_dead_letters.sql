-- Vigía MariaDB schema, version 4: dead letters (issue 12). An ingest batch the store
-- refused for good, with the reason, instead of being retried forever.
-- Each DDL commits by itself, so every statement can be re-run (IF NOT EXISTS). Text
-- columns use a non-binary collation: sqlx reads a binary-collated TEXT as BLOB.
CREATE TABLE IF NOT EXISTS dead_letters (
    id          BIGINT   NOT NULL AUTO_INCREMENT PRIMARY KEY,
    tenant_id   BIGINT   NOT NULL,
    reason      TEXT     NOT NULL,
    received_at BIGINT   NOT NULL,
    dead_at     BIGINT   NOT NULL,
    readings    BIGINT   NOT NULL,
    sensors     TEXT     NOT NULL, -- JSON array: the first distinct sensor keys
    batch       LONGTEXT NOT NULL, -- JSON array of vigia_core::Reading
    KEY dead_letters_by_tenant (tenant_id, id),
    CONSTRAINT dead_letters_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
