CREATE TABLE accounts (
    customer_id   TEXT PRIMARY KEY,
    currency      TEXT NOT NULL,
    -- Integer minor units; the CHECK is the last line of defence against overdrawing.
    balance_minor BIGINT NOT NULL CHECK (balance_minor >= 0),
    updated_at    TIMESTAMP NOT NULL
);

CREATE TABLE charges (
    id              TEXT PRIMARY KEY,
    caller          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    invoice_id      TEXT NOT NULL,
    customer_id     TEXT NOT NULL REFERENCES accounts (customer_id),
    amount_minor    BIGINT NOT NULL CHECK (amount_minor > 0),
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    -- One money movement per caller's key, whatever happens above this table.
    UNIQUE (caller, idempotency_key)
);
CREATE INDEX charges_customer_idx ON charges (customer_id);

-- Keys are kept for good: an invoice may be retried at any time, and an expired key would
-- turn that retry into a second charge.
CREATE TABLE idempotency_keys (
    caller          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    state           TEXT NOT NULL,
    lock_token      TEXT NOT NULL,
    locked_at       TIMESTAMP NOT NULL,
    response_status INTEGER,
    response_body   TEXT,
    completed_at    TIMESTAMP,
    PRIMARY KEY (caller, idempotency_key)
);
