-- Records that stay true through crashes, lost claims and billing periods.

-- A provider answer that needs a person (a key conflict, a code we do not know, our own
-- credential refused): the invoice stays pending and payable, and says why here.
ALTER TABLE invoices ADD COLUMN attention TEXT;

-- Which process runs a pay run and when it last showed signs of life: a run whose
-- heartbeat stops is closed as 'abandoned' by whoever notices.
ALTER TABLE pay_runs ADD COLUMN worker_id TEXT;
ALTER TABLE pay_runs ADD COLUMN heartbeat_at TIMESTAMP;
CREATE INDEX pay_runs_status_idx ON pay_runs (status);

-- Whether the request of an attempt left this service: 'yes' (an answer came back),
-- 'no' (refused before sending), 'unknown' (timeout, connection lost, process died).
ALTER TABLE payment_attempts ADD COLUMN sent TEXT;
CREATE INDEX payment_attempts_run_idx ON payment_attempts (pay_run_id);

-- One row per billing period (a scheduled fire time), taken by the first replica that
-- starts its run after it is due; the key makes a period paid once across replicas. The
-- first row ever written is the 'baseline': periods before the first start are not owed.
CREATE TABLE billing_periods (
    period     TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('baseline', 'run')),
    run_id     TEXT,
    taken_at   TIMESTAMP NOT NULL
);
