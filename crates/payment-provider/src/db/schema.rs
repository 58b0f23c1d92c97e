// Kept in step with migrations/ by hand (both backends share it); the integration tests
// exercise every column on both.

diesel::table! {
    accounts (customer_id) {
        customer_id -> Text,
        currency -> Text,
        balance_minor -> BigInt,
        updated_at -> Timestamp,
        status -> Text,
    }
}

diesel::table! {
    charges (id) {
        id -> Text,
        caller -> Text,
        idempotency_key -> Text,
        invoice_id -> Text,
        customer_id -> Text,
        amount_minor -> BigInt,
        currency -> Text,
        status -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    idempotency_keys (caller, idempotency_key) {
        caller -> Text,
        idempotency_key -> Text,
        request_hash -> Text,
        state -> Text,
        lock_token -> Text,
        locked_at -> Timestamp,
        response_status -> Nullable<Integer>,
        response_body -> Nullable<Text>,
        completed_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(charges -> accounts (customer_id));
diesel::allow_tables_to_appear_in_same_query!(accounts, charges, idempotency_keys);
