//! The contract between invoice-app (consumer) and payment-provider (provider).
//!
//! Only what both sides must agree on lives here: wire types of the charge call, money in
//! integer minor units, currencies, error codes, header names and paths. No business rules,
//! and no HTTP framework, database or runtime: both teams can depend on it freely. With the
//! `openapi` feature the wire types also carry their OpenAPI schemas (utoipa's traits only).

mod charge;
mod ids;
mod money;
#[cfg(feature = "openapi")]
mod openapi;
mod problem;

pub use charge::{AccountResponse, ChargeRequest, ChargeResponse, ChargeStatus};
pub use ids::{CustomerId, IdError, IdempotencyKey, InvoiceId, is_id};
pub use money::{Currency, Money, MoneyError};
pub use problem::{DeclineClass, ErrorCode, Problem};

/// Path of the charge call on payment-provider. `GET` on it with
/// [`IDEMPOTENCY_KEY_PARAM`] looks a key up: the answer the key's charge got, as a replay
/// gives it (200 with the charge, or the stored decline), 404 [`ErrorCode::KeyNotFound`]
/// when the caller never used the key, 409 while it is in flight. A caller sees its own keys
/// only.
pub const CHARGES_PATH: &str = "/v1/charges";
/// Query parameter of the key lookup (`GET /v1/charges?idempotency_key=<key>`).
pub const IDEMPOTENCY_KEY_PARAM: &str = "idempotency_key";
/// Path prefix of the account inspection endpoint (`/v1/accounts/{customer_id}`).
pub const ACCOUNTS_PATH: &str = "/v1/accounts";

/// The customers of the local demo and their accounts' currencies: payment-provider opens
/// their accounts and invoice-app bills them, so the demo pays end to end only while both
/// seed the same ones.
pub const DEMO_CUSTOMERS: [(&str, Currency); 8] = [
    ("C001", Currency::Eur),
    ("C002", Currency::Eur),
    ("C003", Currency::Dkk),
    ("C004", Currency::Sek),
    ("C005", Currency::Gbp),
    ("C006", Currency::Usd),
    ("C007", Currency::Nok),
    ("C008", Currency::Jpy),
];

/// Header names of the charge call.
pub mod headers {
    /// Client-chosen key that makes a charge safe to retry (1–255 visible ASCII characters).
    pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
    /// Set to `true` on a response replayed from the idempotency store.
    pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
}

/// Media type of every error body (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";
