-- The enriched event gained product_family (referral / commerce); rows stored before read back as ''.
ALTER TABLE integration_events ADD COLUMN IF NOT EXISTS product_family LowCardinality(String) DEFAULT '' AFTER integration_platform
