//! invoice-app: keeps invoices and pays the pending ones by charging them at
//! payment-provider, on demand and on a schedule.

pub mod auth;
pub mod billing;
pub mod config;
pub mod db;
pub mod domain;
mod env;
pub mod error;
pub mod http;
pub mod invoices;
pub mod metrics;
pub mod payment_client;
pub mod scheduler;
pub mod seed;
pub mod startup;
pub mod state;
pub mod telemetry;

/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");
