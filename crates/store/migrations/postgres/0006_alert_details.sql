-- Vigía PostgreSQL schema, version 5: what a rule measured when it opened an alert
-- (issue 15): a JSON `vigia_core::AlertDetails`, null for kinds whose value says it all.
ALTER TABLE alerts ADD COLUMN details jsonb;
