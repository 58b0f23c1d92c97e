-- What a run does and what an attempt is, besides who started it (`trigger`):
--   pay_runs.kind: pay (every invoice it can claim), dunning (past-due invoices that are
--   due, for the daily run), reconcile (looks invoices up at the provider, charges nothing);
--   payment_attempts.kind: charge (a POST of the charge) or lookup (a read of the charge
--   under the invoice's key, by reconciliation).
--   billing_periods.schedule: which schedule a period belongs to (monthly, daily), so each
--   schedule has its own baseline and its own periods.
-- Rows from before are pay runs, charges and monthly periods.
ALTER TABLE pay_runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'pay';
ALTER TABLE payment_attempts ADD COLUMN kind TEXT NOT NULL DEFAULT 'charge';
ALTER TABLE billing_periods ADD COLUMN schedule TEXT NOT NULL DEFAULT 'monthly';
