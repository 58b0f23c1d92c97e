-- What operators did to invoices (void, retry, dismiss): who (`jwt:<sub>`, `key:<client>`
-- or `dev`, as `created_by`), when (the database's clock) and why. Each row is written in
-- the transaction that changes the invoice, so an action is on record exactly when it
-- happened. `pay_run_id` is the run a retry started. Ids are time-ordered (UUIDv7): a page
-- of an invoice's actions reads the index in order.
CREATE TABLE invoice_actions (
    id          TEXT PRIMARY KEY,
    invoice_id  TEXT NOT NULL REFERENCES invoices (id),
    action      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT,
    pay_run_id  TEXT,
    created_at  TIMESTAMP NOT NULL
);
CREATE INDEX invoice_actions_invoice_idx ON invoice_actions (invoice_id, id);
