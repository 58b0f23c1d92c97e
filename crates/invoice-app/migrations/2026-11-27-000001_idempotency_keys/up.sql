-- `POST /invoices` with an `Idempotency-Key`: the first answer, replayed to a retry of the
-- same request by the same client. Written in the transaction that creates the invoice, so a
-- key exists exactly when its invoice does; the key is the client's, never global.
CREATE TABLE idempotency_keys (
    client            TEXT NOT NULL,
    idempotency_key   TEXT NOT NULL,
    -- SHA-256 of the parsed request: the same key with another request is refused (422).
    request_hash      TEXT NOT NULL,
    response_status   INTEGER NOT NULL,
    response_location TEXT,
    response_body     TEXT NOT NULL,
    created_at        TIMESTAMP NOT NULL,
    PRIMARY KEY (client, idempotency_key)
);
-- Housekeeping deletes the oldest keys past their retention, a bounded batch at a time.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
