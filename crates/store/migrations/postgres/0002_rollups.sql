-- Vigía PostgreSQL schema, version 2: rollups of raw readings (issue 14).
-- Applied in one transaction by crates/store/src/postgres/schema.rs.
-- A rollup row summarises one (sensor, metric) over one bucket, bucket = start of the
-- minute or hour in epoch ms. Sensor-first keys, unlike `readings`: a rollup is written
-- once per closed bucket (not on the ingest hot path) and read as one sensor's range.
-- `last_ts` keeps the instant of `value_last`, so a recomputed bucket can be checked.

CREATE TABLE rollups_1m (
    sensor_id   bigint NOT NULL,
    metric_id   bigint NOT NULL,
    bucket      bigint NOT NULL,
    value_count bigint NOT NULL,
    value_min   double precision NOT NULL,
    value_max   double precision NOT NULL,
    value_sum   double precision NOT NULL,
    value_last  double precision NOT NULL,
    last_ts     bigint NOT NULL,
    PRIMARY KEY (sensor_id, metric_id, bucket)
);

CREATE TABLE rollups_1h (
    sensor_id   bigint NOT NULL,
    metric_id   bigint NOT NULL,
    bucket      bigint NOT NULL,
    value_count bigint NOT NULL,
    value_min   double precision NOT NULL,
    value_max   double precision NOT NULL,
    value_sum   double precision NOT NULL,
    value_last  double precision NOT NULL,
    last_ts     bigint NOT NULL,
    PRIMARY KEY (sensor_id, metric_id, bucket)
);

-- Buckets behind the watermark that a late reading touched: recomputed from raw on the
-- next roll-up, then deleted. `resolution` is the bucket width in ms (60000 or 3600000).
CREATE TABLE rollup_dirty (
    resolution bigint NOT NULL,
    sensor_id  bigint NOT NULL,
    metric_id  bigint NOT NULL,
    bucket     bigint NOT NULL,
    PRIMARY KEY (resolution, sensor_id, metric_id, bucket)
);

-- Per resolution, the end (exclusive, epoch ms) of the closed raw range already rolled up.
CREATE TABLE rollup_watermarks (
    resolution    bigint PRIMARY KEY,
    closed_before bigint NOT NULL
);
