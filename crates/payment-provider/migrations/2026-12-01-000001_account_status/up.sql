-- Where an account stands: 'active' accounts are charged; 'on_hold' ones are declined with
-- try_again_later (soft) until the hold is lifted; 'closed' ones with account_closed (hard),
-- for good. Existing accounts are active.
ALTER TABLE accounts ADD COLUMN status TEXT NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'on_hold', 'closed'));
