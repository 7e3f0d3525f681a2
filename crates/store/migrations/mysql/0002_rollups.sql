-- Vigía MariaDB schema, version 2: rollups of raw readings (issue 14).
-- Each DDL commits by itself, so every statement can be re-run (IF NOT EXISTS).
-- A rollup row summarises one (sensor, metric) over one bucket, bucket = start of the
-- minute or hour in epoch ms. Sensor-first keys, unlike `readings`: a rollup is written
-- once per closed bucket (not on the ingest hot path) and read as one sensor's range.
-- `last_ts` keeps the instant of `value_last`, so a recomputed bucket can be checked.

CREATE TABLE IF NOT EXISTS rollups_1m (
    sensor_id   BIGINT NOT NULL,
    metric_id   BIGINT NOT NULL,
    bucket      BIGINT NOT NULL,
    value_count BIGINT NOT NULL,
    value_min   DOUBLE  NOT NULL,
    value_max   DOUBLE  NOT NULL,
    value_sum   DOUBLE  NOT NULL,
    value_last  DOUBLE  NOT NULL,
    last_ts     BIGINT NOT NULL,
    PRIMARY KEY (sensor_id, metric_id, bucket)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS rollups_1h (
    sensor_id   BIGINT NOT NULL,
    metric_id   BIGINT NOT NULL,
    bucket      BIGINT NOT NULL,
    value_count BIGINT NOT NULL,
    value_min   DOUBLE  NOT NULL,
    value_max   DOUBLE  NOT NULL,
    value_sum   DOUBLE  NOT NULL,
    value_last  DOUBLE  NOT NULL,
    last_ts     BIGINT NOT NULL,
    PRIMARY KEY (sensor_id, metric_id, bucket)
) ENGINE = InnoDB;

-- Buckets behind the watermark that a late reading touched: recomputed from raw on the
-- next roll-up, then deleted. `resolution` is the bucket width in ms (60000 or 3600000).
CREATE TABLE IF NOT EXISTS rollup_dirty (
    resolution BIGINT NOT NULL,
    sensor_id  BIGINT NOT NULL,
    metric_id  BIGINT NOT NULL,
    bucket     BIGINT NOT NULL,
    PRIMARY KEY (resolution, sensor_id, metric_id, bucket)
) ENGINE = InnoDB;

-- Per resolution, the end (exclusive, epoch ms) of the closed raw range already rolled up.
CREATE TABLE IF NOT EXISTS rollup_watermarks (
    resolution    BIGINT NOT NULL PRIMARY KEY,
    closed_before BIGINT NOT NULL
) ENGINE = InnoDB;
