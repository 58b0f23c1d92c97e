-- As on PostgreSQL: the status list lives in `domain::InvoiceStatus` alone. SQLite drops a
-- constraint only by rebuilding the table (its documented procedure: foreign keys off,
-- copy, swap, check).
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE invoices_rebuilt (
    id             TEXT PRIMARY KEY,
    customer_id    TEXT NOT NULL,
    amount_minor   BIGINT NOT NULL CHECK (amount_minor > 0),
    currency       TEXT NOT NULL,
    description    TEXT NOT NULL,
    status         TEXT NOT NULL,
    failure_reason TEXT,
    charge_id      TEXT,
    claimed_by     TEXT,
    lease_until    TIMESTAMP,
    last_run_id    TEXT,
    created_at     TIMESTAMP NOT NULL,
    updated_at     TIMESTAMP NOT NULL,
    paid_at        TIMESTAMP,
    attention      TEXT,
    created_by     TEXT
);
INSERT INTO invoices_rebuilt
    SELECT id, customer_id, amount_minor, currency, description, status, failure_reason,
           charge_id, claimed_by, lease_until, last_run_id, created_at, updated_at, paid_at,
           attention, created_by
    FROM invoices;
DROP TABLE invoices;
ALTER TABLE invoices_rebuilt RENAME TO invoices;
CREATE INDEX invoices_status_id_idx ON invoices (status, id);
COMMIT;
PRAGMA foreign_keys = ON;
