DROP INDEX invoices_due_idx;
ALTER TABLE invoices DROP COLUMN next_attempt_at;
ALTER TABLE invoices DROP COLUMN past_due_since;
ALTER TABLE invoices DROP COLUMN attempt_count;
