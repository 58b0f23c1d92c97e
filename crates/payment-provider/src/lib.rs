//! payment-provider: customer accounts and idempotent charges, standing in for a real
//! payment service provider.

pub mod accounts;
pub mod auth;
pub mod charging;
pub mod config;
pub mod db;
pub mod domain;
mod env;
pub mod error;
pub mod faults;
pub mod http;
pub mod metrics;
pub mod pact_states;
pub mod seed;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod tls;
