-- Vigía MariaDB schema, version 3: one watermark row per rollup resolution (issue 14).
-- InnoDB cannot lock a row that does not exist, so the rows must be there before the
-- first roll-up: a batch reads them LOCK IN SHARE MODE and a roll-up FOR UPDATE, and only
-- existing rows make the two wait for each other (see crates/store/src/mysql/rollups.rs).
-- closed_before = -9223372036854775808 (the smallest BIGINT) stands for "not rolled up
-- yet". INSERT IGNORE: re-running the file keeps rows a roll-up already moved, and the
-- values are constants, so nothing else can be silently skipped.

INSERT IGNORE INTO rollup_watermarks (resolution, closed_before) VALUES
    (60000, -9223372036854775808),
    (3600000, -9223372036854775808);
