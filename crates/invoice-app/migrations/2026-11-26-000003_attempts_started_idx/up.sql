-- The metrics read the attempts of the last minutes at every scrape (every replica's, every
-- 30 s): without an index that is a scan of the whole audit trail.
CREATE INDEX payment_attempts_started_idx ON payment_attempts (started_at);
