-- Counters the log page and the alerts need, kept up to date by materialized views: events per
-- account, integration, type, status and direction, per minute and per hour. Each insert into
-- integration_events adds its counts here in the same INSERT; an insert dropped by the
-- deduplication token (a re-sent batch) is dropped here too. SummingMergeTree adds rows with the
-- same key when parts merge, so readers sum(events) and need no FINAL.
--
-- The counts are plain counts of inserted rows: exact because the sink inserts each event_id once
-- (it skips ids already stored and re-sent batches carry the same token). integration_events read
-- with FINAL stays the source of truth; docs/storage.md says when the two can differ.
CREATE TABLE IF NOT EXISTS integration_events_per_minute
(
    account_id     String,
    integration_id String,
    bucket         DateTime('UTC') CODEC(Delta, ZSTD),
    type           LowCardinality(String),
    status         Enum8('info' = 1, 'success' = 2, 'failure' = 3),
    direction      Enum8('none' = 0, 'pull' = 1, 'push' = 2),
    events         UInt64 CODEC(T64, ZSTD)
)
ENGINE = SummingMergeTree(events)
PARTITION BY toYYYYMM(bucket)
ORDER BY (account_id, integration_id, bucket, type, status, direction)
SETTINGS ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1, non_replicated_deduplication_window = 1000;

-- Same columns, engine, key and settings as the per-minute table; only the bucket width differs.
CREATE TABLE IF NOT EXISTS integration_events_per_hour AS integration_events_per_minute;

-- Which rollups have had their backfill: the marker that makes a backfill happen once.
CREATE TABLE IF NOT EXISTS integration_events_rollup_backfills
(
    rollup        String,
    backfilled_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY rollup
SETTINGS non_replicated_deduplication_window = 100;

-- Each view is followed by its backfill, so rows stored before the view existed are counted too,
-- once, from the deduplicated table. The view counts what is inserted after it was created; the
-- backfill counts what was stored before it runs, milliseconds later (a batch stored in between
-- would be counted twice: migrate before starting the sinks, as every ievents process does).
-- Once only: a backfill runs while its rollup has no marker, and two processes migrating at the
-- same moment (both seeing no marker) send the same deduplication token, so the second insert is
-- dropped. On an empty table the backfill inserts nothing, and the marker still says it is done.
CREATE MATERIALIZED VIEW IF NOT EXISTS integration_events_per_minute_mv TO integration_events_per_minute AS
SELECT account_id, integration_id, toStartOfMinute(occurred_at) AS bucket, type, status, direction, count() AS events
FROM integration_events
GROUP BY account_id, integration_id, bucket, type, status, direction;

INSERT INTO integration_events_per_minute (account_id, integration_id, bucket, type, status, direction, events)
SETTINGS insert_deduplication_token = 'ievents-0006-backfill-per-minute'
SELECT account_id, integration_id, toStartOfMinute(occurred_at) AS bucket, type, status, direction, count() AS events
FROM integration_events FINAL
WHERE stored_at < now64(3)
  AND (SELECT count() FROM integration_events_rollup_backfills WHERE rollup = 'integration_events_per_minute') = 0
GROUP BY account_id, integration_id, bucket, type, status, direction;

INSERT INTO integration_events_rollup_backfills (rollup)
SETTINGS insert_deduplication_token = 'ievents-0006-backfilled-per-minute'
VALUES ('integration_events_per_minute');

CREATE MATERIALIZED VIEW IF NOT EXISTS integration_events_per_hour_mv TO integration_events_per_hour AS
SELECT account_id, integration_id, toStartOfHour(occurred_at) AS bucket, type, status, direction, count() AS events
FROM integration_events
GROUP BY account_id, integration_id, bucket, type, status, direction;

INSERT INTO integration_events_per_hour (account_id, integration_id, bucket, type, status, direction, events)
SETTINGS insert_deduplication_token = 'ievents-0006-backfill-per-hour'
SELECT account_id, integration_id, toStartOfHour(occurred_at) AS bucket, type, status, direction, count() AS events
FROM integration_events FINAL
WHERE stored_at < now64(3)
  AND (SELECT count() FROM integration_events_rollup_backfills WHERE rollup = 'integration_events_per_hour') = 0
GROUP BY account_id, integration_id, bucket, type, status, direction;

INSERT INTO integration_events_rollup_backfills (rollup)
SETTINGS insert_deduplication_token = 'ievents-0006-backfilled-per-hour'
VALUES ('integration_events_per_hour')
