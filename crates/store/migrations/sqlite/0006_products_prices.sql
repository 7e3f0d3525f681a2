-- Vigía SQLite schema, version 6: products and prices (issue 15). A product's cold-chain
-- limits are cumulative milliseconds out of range; a price is exact, in millionths of the
-- currency unit per kg, and unique on its identity so a re-import changes nothing.
CREATE TABLE products (
    tenant_id        INTEGER NOT NULL REFERENCES tenants (id),
    code             TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    weight_kg        REAL,
    keep_below_ms    INTEGER NOT NULL,
    discard_after_ms INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, code)
);
-- AUTOINCREMENT: ids are never reused, so a list cursor stays meaningful.
CREATE TABLE prices (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id     INTEGER NOT NULL REFERENCES tenants (id),
    product       TEXT    NOT NULL,
    currency      TEXT    NOT NULL,
    per_kg_micros INTEGER NOT NULL,
    valid_from    INTEGER NOT NULL,
    source        TEXT    NOT NULL,
    imported_at   INTEGER NOT NULL,
    UNIQUE (tenant_id, product, currency, valid_from, source)
);
CREATE INDEX prices_by_tenant ON prices (tenant_id, id);
