-- Vigía SQLite schema, version 3: rollups of raw readings (issue 14).
-- A rollup row summarises one (sensor, metric) over one bucket, bucket = start of the
-- minute or hour in epoch ms. Sensor-first keys, unlike `readings`: a rollup is written
-- once per closed bucket (not on the ingest hot path) and read as one sensor's range.
-- `last_ts` keeps the instant of `value_last`, so a recomputed bucket can be checked.

CREATE TABLE rollups_1m (
    sensor_id   INTEGER NOT NULL,
    metric_id   INTEGER NOT NULL,
    bucket      INTEGER NOT NULL,
    value_count INTEGER NOT NULL,
    value_min   REAL    NOT NULL,
    value_max   REAL    NOT NULL,
    value_sum   REAL    NOT NULL,
    value_last  REAL    NOT NULL,
    last_ts     INTEGER NOT NULL,
    PRIMARY KEY (sensor_id, metric_id, bucket)
) WITHOUT ROWID;

CREATE TABLE rollups_1h (
    sensor_id   INTEGER NOT NULL,
    metric_id   INTEGER NOT NULL,
    bucket      INTEGER NOT NULL,
    value_count INTEGER NOT NULL,
    value_min   REAL    NOT NULL,
    value_max   REAL    NOT NULL,
    value_sum   REAL    NOT NULL,
    value_last  REAL    NOT NULL,
    last_ts     INTEGER NOT NULL,
    PRIMARY KEY (sensor_id, metric_id, bucket)
) WITHOUT ROWID;

-- Buckets behind the watermark that a late reading touched: recomputed from raw on the
-- next roll-up, then deleted. `resolution` is the bucket width in ms (60000 or 3600000).
CREATE TABLE rollup_dirty (
    resolution INTEGER NOT NULL,
    sensor_id  INTEGER NOT NULL,
    metric_id  INTEGER NOT NULL,
    bucket     INTEGER NOT NULL,
    PRIMARY KEY (resolution, sensor_id, metric_id, bucket)
) WITHOUT ROWID;

-- Per resolution, the end (exclusive, epoch ms) of the closed raw range already rolled up.
CREATE TABLE rollup_watermarks (
    resolution    INTEGER PRIMARY KEY,
    closed_before INTEGER NOT NULL
);
