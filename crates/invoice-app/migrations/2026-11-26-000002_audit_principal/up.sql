-- Who acted, for the audit trail: the API caller as `jwt:<sub>`, `key:<client>` or `dev`.
-- Null for rows written before this migration, by the seed, the schedule or the CLI.
ALTER TABLE invoices ADD COLUMN created_by TEXT;
ALTER TABLE pay_runs ADD COLUMN started_by TEXT;
