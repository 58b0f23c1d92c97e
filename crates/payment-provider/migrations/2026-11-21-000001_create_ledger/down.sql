DROP TABLE idempotency_keys;
DROP TABLE charges;
DROP TABLE accounts;
