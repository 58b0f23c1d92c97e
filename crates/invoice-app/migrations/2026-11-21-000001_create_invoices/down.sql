DROP TABLE payment_attempts;
DROP TABLE pay_runs;
DROP TABLE invoices;
