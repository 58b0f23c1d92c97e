-- The provider's code of a declined attempt (insufficient_funds, account_closed, ...),
-- written when the attempt finishes, so that reading it never means parsing `detail`.
-- Null for every other outcome.
ALTER TABLE payment_attempts ADD COLUMN provider_code TEXT;
-- Declines recorded before this column kept their code at the head of `detail`
-- ("<code>: <detail>"). The codes are the ones invoice-app reads as declines; LIKE's '_'
-- matches itself too, and SQLite's LIKE ignores case, which lowercase codes never need.
UPDATE payment_attempts
SET provider_code = CASE
    WHEN detail LIKE 'insufficient_funds: %' THEN 'insufficient_funds'
    WHEN detail LIKE 'try_again_later: %' THEN 'try_again_later'
    WHEN detail LIKE 'customer_not_found: %' THEN 'customer_not_found'
    WHEN detail LIKE 'currency_mismatch: %' THEN 'currency_mismatch'
    WHEN detail LIKE 'account_closed: %' THEN 'account_closed'
    WHEN detail LIKE 'invalid_request: %' THEN 'invalid_request'
END
WHERE outcome = 'declined';
