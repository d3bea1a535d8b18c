-- Retention (the TTL) is applied by migrate() from IEVENTS_RETENTION_DAYS, not fixed here.
-- Partitions are months, so let TTL drop whole parts once every row in them has expired instead
-- of rewriting a month of data every few hours to cut a day off its start: an event is kept at
-- least retention_days, and at most about a month longer. When the TTL changes, parts written
-- before only get their TTL bounds recalculated (reading occurred_at alone; the other column
-- files are hard-linked, not rewritten), so they expire like new ones.
ALTER TABLE integration_events MODIFY SETTING ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1
