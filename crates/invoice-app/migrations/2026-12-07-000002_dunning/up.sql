-- Dunning: an invoice declined softly is past due and tried again on a schedule counted
-- from its first decline. Runs after each backend's own migrations of the day before (the
-- SQLite rebuild restates the table): all directories run as one sequence by version.
ALTER TABLE invoices ADD COLUMN attempt_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE invoices ADD COLUMN past_due_since TIMESTAMP;
ALTER TABLE invoices ADD COLUMN next_attempt_at TIMESTAMP;
-- Pay runs look for the past-due invoices that are due.
CREATE INDEX invoices_due_idx ON invoices (status, next_attempt_at);
