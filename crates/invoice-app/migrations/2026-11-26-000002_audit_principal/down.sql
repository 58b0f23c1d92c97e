ALTER TABLE pay_runs DROP COLUMN started_by;
ALTER TABLE invoices DROP COLUMN created_by;
