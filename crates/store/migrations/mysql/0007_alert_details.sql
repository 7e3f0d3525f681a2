-- Vigía MariaDB schema, version 6: what a rule measured when it opened an alert (issue
-- 15): a JSON `vigia_core::AlertDetails`, null for kinds whose value says it all.
-- Each DDL commits by itself, so the statement can be re-run (IF NOT EXISTS). LONGTEXT
-- with a non-binary collation: sqlx reads a binary-collated TEXT (and JSON) as BLOB.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS details LONGTEXT CHARACTER SET utf8mb4 NULL;
