-- The Integration Events log: one row per event, duplicates collapsed on the ORDER BY key.
-- A re-delivered event has the same account, integration, occurred_at and event_id, so
-- ReplacingMergeTree keeps one copy (the latest processed_at); readers use FINAL until merges run.
CREATE TABLE IF NOT EXISTS integration_events
(
    event_id             UUID,
    account_id           String,
    integration_id       String,
    integration_name     String,
    integration_platform LowCardinality(String),
    occurred_at          DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    type                 LowCardinality(String),
    type_raw             LowCardinality(String),
    direction            Enum8('none' = 0, 'pull' = 1, 'push' = 2),
    status               Enum8('info' = 1, 'success' = 2, 'failure' = 3),
    status_raw           LowCardinality(String),
    message              String CODEC(ZSTD),
    result               String CODEC(ZSTD),
    parameters           Map(String, String) CODEC(ZSTD),
    details              String CODEC(ZSTD),
    message_template     String CODEC(ZSTD),
    error_category       LowCardinality(String),
    error_fingerprint    String,
    redacted_parameters  Array(String),
    processed_at         DateTime64(3, 'UTC'),
    source_partition     Int32,
    source_offset        Int64,
    stored_at            DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(processed_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (account_id, integration_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000
