-- Vigía SQLite schema, version 7: excursions (issue 15). Each time a sensor left a
-- rule's limits: from the first out-of-range reading (start_at) to the first in-range
-- one (end_at, NULL while it goes on), in event time, epoch milliseconds. Written in the
-- same transaction as the readings, upserted by (sensor, start, rule) with absolute
-- values: a redelivered batch writes the same row again. Keyed sensor first, so one
-- sensor's excursions over a range are one index range (reports never scan readings).
CREATE TABLE excursions (
    sensor_id INTEGER NOT NULL REFERENCES sensors (id),
    start_at  INTEGER NOT NULL,
    rule      TEXT    NOT NULL,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id),
    metric    TEXT    NOT NULL,
    end_at    INTEGER,
    last_at   INTEGER NOT NULL, -- the newest reading counted (the closing one once ended)
    peak      REAL    NOT NULL, -- the reading farthest past the limits
    out_ms    INTEGER NOT NULL, -- time out of range; a silence inside counts as out
    gaps      INTEGER NOT NULL, -- silences inside it
    gap_ms    INTEGER NOT NULL, -- their total length
    PRIMARY KEY (sensor_id, start_at, rule)
) WITHOUT ROWID;
CREATE INDEX excursions_ongoing ON excursions (sensor_id) WHERE end_at IS NULL;
