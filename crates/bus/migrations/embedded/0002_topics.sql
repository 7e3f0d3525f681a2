-- Topics: one log carries every topic, ids stay one sequence across them. A message's
-- count is its weight (readings for the readings topic, 1 per event). Rows written
-- before topics existed are readings.
ALTER TABLE messages RENAME COLUMN readings TO weight;
ALTER TABLE messages ADD COLUMN topic TEXT NOT NULL DEFAULT 'readings';
ALTER TABLE dead_letters ADD COLUMN topic TEXT NOT NULL DEFAULT 'readings';
