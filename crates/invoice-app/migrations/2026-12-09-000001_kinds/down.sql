ALTER TABLE billing_periods DROP COLUMN schedule;
ALTER TABLE payment_attempts DROP COLUMN kind;
ALTER TABLE pay_runs DROP COLUMN kind;
