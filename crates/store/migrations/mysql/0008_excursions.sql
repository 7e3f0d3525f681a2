-- Vigía MariaDB schema, version 7: excursions (issue 15). Each time a sensor left a
-- rule's limits: from the first out-of-range reading (start_at) to the first in-range
-- one (end_at, NULL while it goes on), in event time, epoch milliseconds. Written in the
-- same transaction as the readings, upserted by (sensor, start, rule) with absolute
-- values: a redelivered batch writes the same row again. Keyed sensor first, so one
-- sensor's excursions over a range are one index range (reports never scan readings).
-- Each DDL commits by itself, so every statement can be re-run (IF NOT EXISTS). Names
-- compare byte by byte (utf8mb4_nopad_bin), as in 0001_init.sql.
CREATE TABLE IF NOT EXISTS excursions (
    sensor_id BIGINT       NOT NULL,
    start_at  BIGINT       NOT NULL,
    rule      VARCHAR(255) NOT NULL,
    tenant_id BIGINT       NOT NULL,
    metric    VARCHAR(255) NOT NULL,
    end_at    BIGINT       NULL,
    last_at   BIGINT       NOT NULL, -- the newest reading counted (the closing one once ended)
    peak      DOUBLE       NOT NULL, -- the reading farthest past the limits
    out_ms    BIGINT       NOT NULL, -- time out of range; a silence inside counts as out
    gaps      BIGINT       NOT NULL, -- silences inside it
    gap_ms    BIGINT       NOT NULL, -- their total length
    PRIMARY KEY (sensor_id, start_at, rule),
    KEY excursions_ongoing (end_at, sensor_id),
    CONSTRAINT excursions_sensor FOREIGN KEY (sensor_id) REFERENCES sensors (id),
    CONSTRAINT excursions_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
