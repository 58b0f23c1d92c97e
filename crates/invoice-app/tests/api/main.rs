//! One integration binary: the real invoice-app and the real payment-provider, each on a
//! random port with its own fresh database, on SQLite and on PostgreSQL.

mod helpers;

mod actions;
mod api;
mod attempts;
mod auth;
mod claims_model;
mod crash;
mod dunning;
mod faults;
mod fuzz;
mod idempotency;
mod monitoring;
mod paying;
mod provider_tls;
mod provider_token;
mod reconcile;
mod records;
mod replicas;
mod routes;
mod schedule;
mod takeovers;
