-- Codecs chosen from `ievents bench storage` at 1,000,000 events (docs/storage.md): per event,
-- processed_at 5.9 -> 3.4 bytes (Delta: it trails occurred_at by milliseconds, in key order),
-- source_offset 4.1 -> 1.0 bytes (Delta: offsets climb within a partition), error_fingerprint
-- 3.3 -> 1.0 bytes (ZSTD: a few thousand distinct values repeat). Codec-only changes touch
-- metadata only: new parts, and parts as they merge, are written with them; nothing is rewritten now.
ALTER TABLE integration_events MODIFY COLUMN processed_at CODEC(Delta, ZSTD);
ALTER TABLE integration_events MODIFY COLUMN source_offset CODEC(Delta, ZSTD);
ALTER TABLE integration_events MODIFY COLUMN stored_at CODEC(Delta, ZSTD);
ALTER TABLE integration_events MODIFY COLUMN error_fingerprint CODEC(ZSTD)
