CREATE TABLE invoices (
    id             TEXT PRIMARY KEY,
    customer_id    TEXT NOT NULL,
    -- Integer minor units of `currency`: no floats anywhere near money.
    amount_minor   BIGINT NOT NULL CHECK (amount_minor > 0),
    currency       TEXT NOT NULL,
    description    TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'paid', 'failed')),
    failure_reason TEXT,
    charge_id      TEXT,
    -- The claim of the worker paying it; an expired lease may be taken over.
    claimed_by     TEXT,
    lease_until    TIMESTAMP,
    -- The pay run that last tried it, so a run never retries within itself.
    last_run_id    TEXT,
    created_at     TIMESTAMP NOT NULL,
    updated_at     TIMESTAMP NOT NULL,
    paid_at        TIMESTAMP
);
CREATE INDEX invoices_status_id_idx ON invoices (status, id);

CREATE TABLE pay_runs (
    id           TEXT PRIMARY KEY,
    trigger      TEXT NOT NULL,
    status       TEXT NOT NULL,
    paid         INTEGER NOT NULL,
    failed       INTEGER NOT NULL,
    retry_later  INTEGER NOT NULL,
    error        TEXT,
    started_at   TIMESTAMP NOT NULL,
    finished_at  TIMESTAMP
);

-- The audit trail: written before each call to the provider and completed after it, so a
-- crash in between leaves a visible 'started' attempt rather than a silent gap.
CREATE TABLE payment_attempts (
    id              TEXT PRIMARY KEY,
    invoice_id      TEXT NOT NULL REFERENCES invoices (id),
    pay_run_id      TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    http_status     INTEGER,
    detail          TEXT,
    charge_id       TEXT,
    started_at      TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP
);
CREATE INDEX payment_attempts_invoice_idx ON payment_attempts (invoice_id);
