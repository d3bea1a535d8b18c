-- Looking an event up by event_id alone (the detail page; the sink asking which ids of a batch are
-- already stored) cannot use the sorting key, whose first columns are account and integration.
-- A bloom filter per 4 granules (32768 rows; ~1 byte per row at the default 2.5 % false
-- positives) lets such reads skip the blocks that cannot hold the id.
ALTER TABLE integration_events ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter GRANULARITY 4;
-- Parts written before the index existed get it too (a background mutation that only writes the
-- index files; reads stay correct meanwhile, old parts are just not skipped yet).
ALTER TABLE integration_events MATERIALIZE INDEX event_id_bloom
