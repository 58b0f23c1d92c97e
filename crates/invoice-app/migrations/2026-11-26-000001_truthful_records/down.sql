DROP TABLE billing_periods;
DROP INDEX payment_attempts_run_idx;
ALTER TABLE payment_attempts DROP COLUMN sent;
DROP INDEX pay_runs_status_idx;
ALTER TABLE pay_runs DROP COLUMN heartbeat_at;
ALTER TABLE pay_runs DROP COLUMN worker_id;
ALTER TABLE invoices DROP COLUMN attention;
