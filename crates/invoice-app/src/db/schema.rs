// Kept in step with migrations/ by hand (both backends share it); the integration tests
// exercise every column on both.

diesel::table! {
    invoices (id) {
        id -> Text,
        customer_id -> Text,
        amount_minor -> BigInt,
        currency -> Text,
        description -> Text,
        status -> Text,
        failure_reason -> Nullable<Text>,
        charge_id -> Nullable<Text>,
        claimed_by -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        last_run_id -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        paid_at -> Nullable<Timestamp>,
        attention -> Nullable<Text>,
        created_by -> Nullable<Text>,
        attempt_count -> Integer,
        past_due_since -> Nullable<Timestamp>,
        next_attempt_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    pay_runs (id) {
        id -> Text,
        trigger -> Text,
        status -> Text,
        paid -> Integer,
        failed -> Integer,
        retry_later -> Integer,
        error -> Nullable<Text>,
        started_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
        worker_id -> Nullable<Text>,
        heartbeat_at -> Nullable<Timestamp>,
        started_by -> Nullable<Text>,
        kind -> Text,
    }
}

diesel::table! {
    payment_attempts (id) {
        id -> Text,
        invoice_id -> Text,
        pay_run_id -> Text,
        idempotency_key -> Text,
        outcome -> Text,
        http_status -> Nullable<Integer>,
        detail -> Nullable<Text>,
        charge_id -> Nullable<Text>,
        started_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
        sent -> Nullable<Text>,
        provider_code -> Nullable<Text>,
        kind -> Text,
    }
}

diesel::table! {
    billing_periods (period) {
        period -> Text,
        kind -> Text,
        run_id -> Nullable<Text>,
        taken_at -> Timestamp,
        schedule -> Text,
    }
}

diesel::table! {
    idempotency_keys (client, idempotency_key) {
        client -> Text,
        idempotency_key -> Text,
        request_hash -> Text,
        response_status -> Integer,
        response_location -> Nullable<Text>,
        response_body -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    invoice_actions (id) {
        id -> Text,
        invoice_id -> Text,
        action -> Text,
        actor -> Text,
        reason -> Nullable<Text>,
        pay_run_id -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::joinable!(payment_attempts -> invoices (invoice_id));
diesel::joinable!(invoice_actions -> invoices (invoice_id));
diesel::allow_tables_to_appear_in_same_query!(
    billing_periods,
    idempotency_keys,
    invoice_actions,
    invoices,
    pay_runs,
    payment_attempts
);
