-- Rows ClickHouse refuses on its own: the sink sends each such row to the DLQ with the server's
-- error and stores the rest of its batch. The stream validates the same rules first; these guard
-- the table against anything else that writes to the enriched topic.
ALTER TABLE integration_events ADD CONSTRAINT IF NOT EXISTS account_id_present CHECK account_id != '';
ALTER TABLE integration_events ADD CONSTRAINT IF NOT EXISTS integration_id_present CHECK integration_id != '';
ALTER TABLE integration_events ADD CONSTRAINT IF NOT EXISTS occurred_after_2000 CHECK occurred_at >= toDateTime64('2000-01-01 00:00:00', 3, 'UTC')
