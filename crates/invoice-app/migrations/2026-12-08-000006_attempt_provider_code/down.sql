ALTER TABLE payment_attempts DROP COLUMN provider_code;
