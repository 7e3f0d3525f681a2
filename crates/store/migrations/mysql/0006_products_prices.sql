-- Vigía MariaDB schema, version 6: products and prices (issue 15). A product's cold-chain
-- limits are cumulative milliseconds out of range; a price is exact, in millionths of the
-- currency unit per kg, and unique on its identity so a re-import changes nothing.
-- Each DDL commits by itself, so every statement can be re-run (IF NOT EXISTS). Keyed
-- text is VARCHAR within the service's limits (code 64, source 128) so the unique index
-- fits InnoDB's key size; utf8mb4_nopad_bin compares codes byte by byte, as the other backends do.
CREATE TABLE IF NOT EXISTS products (
    tenant_id        BIGINT       NOT NULL,
    code             VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    name             TEXT         NOT NULL,
    weight_kg        DOUBLE       NULL,
    keep_below_ms    BIGINT       NOT NULL,
    discard_after_ms BIGINT       NOT NULL,
    updated_at       BIGINT       NOT NULL,
    PRIMARY KEY (tenant_id, code),
    CONSTRAINT products_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
CREATE TABLE IF NOT EXISTS prices (
    id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    tenant_id     BIGINT       NOT NULL,
    product       VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    currency      CHAR(3)      CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    per_kg_micros BIGINT       NOT NULL,
    valid_from    BIGINT       NOT NULL,
    source        VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    imported_at   BIGINT       NOT NULL,
    UNIQUE KEY prices_identity (tenant_id, product, currency, valid_from, source),
    KEY prices_by_tenant (tenant_id, id),
    CONSTRAINT prices_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
