//! One integration binary: the real payment-provider on a random port, on SQLite and on
//! PostgreSQL (`TEST_DATABASE_URL`), a fresh database per test.

mod helpers;

mod caller_identity;
mod charges;
mod declines;
mod fuzz;
mod hostile_input;
mod idempotency;
mod logs;
mod lookup;
mod operations;
mod tls;
mod workload_identity;
