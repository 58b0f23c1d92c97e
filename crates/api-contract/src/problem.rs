//! Error bodies of the charge call: RFC 9457 problem details with a stable machine-readable
//! `code`, as payment-provider sends them and invoice-app reads them. Each service's own
//! codes beyond these (invoice-app's `insufficient_scope`, ...) live in that service's
//! `error.rs`: only what crosses the charge call is shared.

use serde::{Deserialize, Serialize};

/// Stable error codes of payment-provider's answers. Clients branch on these, never on
/// `title` or `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not well-formed JSON.
    MalformedRequest,
    /// Well-formed, but a field is missing, of the wrong type or out of range.
    InvalidRequest,
    UnsupportedMediaType,
    PayloadTooLarge,
    MissingIdempotencyKey,
    InvalidIdempotencyKey,
    /// The key was used before with a different request body.
    IdempotencyKeyReused,
    /// A request with the same key is still being processed.
    IdempotencyKeyInFlight,
    /// A key lookup found nothing: this caller never sent a charge with the key (or its
    /// request was refused before anything was charged).
    KeyNotFound,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    CustomerNotFound,
    InsufficientFunds,
    CurrencyMismatch,
    /// The account may not be charged for now (it is on hold); the same charge may pass
    /// later.
    TryAgainLater,
    /// The account is closed: no charge will ever pass.
    AccountClosed,
    RateLimited,
    ServiceUnavailable,
    InternalError,
    /// A code this version does not know yet (forward compatibility).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedRequest => "malformed_request",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::MissingIdempotencyKey => "missing_idempotency_key",
            ErrorCode::InvalidIdempotencyKey => "invalid_idempotency_key",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::IdempotencyKeyInFlight => "idempotency_key_in_flight",
            ErrorCode::KeyNotFound => "key_not_found",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::CustomerNotFound => "customer_not_found",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::CurrencyMismatch => "currency_mismatch",
            ErrorCode::TryAgainLater => "try_again_later",
            ErrorCode::AccountClosed => "account_closed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ServiceUnavailable => "service_unavailable",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// Whether the code is a decline of the customer's account, and of which class; `None`
    /// for every other code. Both sides read the class from here, so the provider cannot
    /// call a decline soft that its caller gives up on, or the other way round.
    pub const fn decline_class(self) -> Option<DeclineClass> {
        match self {
            ErrorCode::InsufficientFunds | ErrorCode::TryAgainLater => Some(DeclineClass::Soft),
            ErrorCode::CustomerNotFound
            | ErrorCode::CurrencyMismatch
            | ErrorCode::AccountClosed => Some(DeclineClass::Hard),
            _ => None,
        }
    }
}

/// How final a decline is. The class follows from the code ([`ErrorCode::decline_class`]),
/// so it is not sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineClass {
    /// The same charge may pass on a later attempt, under a new idempotency key: funds
    /// arrive, a hold is lifted.
    Soft,
    /// No later attempt will pass: the account is missing, closed or in another currency.
    Hard,
}

impl DeclineClass {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeclineClass::Soft => "soft",
            DeclineClass::Hard => "hard",
        }
    }
}

/// `application/problem+json` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub code: ErrorCode,
}

impl Problem {
    pub fn new(status: u16, code: ErrorCode, title: &str, detail: Option<String>) -> Self {
        Problem {
            type_uri: format!("urn:invoice-platform:problem:{}", code.as_str()),
            title: title.to_owned(),
            status,
            detail,
            code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_serialises_as_its_stable_name() {
        for code in [
            ErrorCode::InsufficientFunds,
            ErrorCode::IdempotencyKeyInFlight,
            ErrorCode::KeyNotFound,
            ErrorCode::CurrencyMismatch,
            ErrorCode::Unauthorized,
            ErrorCode::TryAgainLater,
            ErrorCode::AccountClosed,
        ] {
            let json = serde_json::to_value(code).expect("serialises");
            assert_eq!(json, serde_json::Value::String(code.as_str().to_owned()));
            assert_eq!(
                serde_json::from_value::<ErrorCode>(json).expect("parses"),
                code
            );
        }
    }

    /// The classes, written out: a code moved from one class to the other changes what
    /// invoice-app does with the invoice, so it must be a change of this table too.
    #[test]
    fn declines_and_their_classes() {
        use DeclineClass::{Hard, Soft};
        let declines = [
            (ErrorCode::InsufficientFunds, Soft),
            (ErrorCode::TryAgainLater, Soft),
            (ErrorCode::CustomerNotFound, Hard),
            (ErrorCode::CurrencyMismatch, Hard),
            (ErrorCode::AccountClosed, Hard),
        ];
        for (code, class) in declines {
            assert_eq!(code.decline_class(), Some(class), "{}", code.as_str());
        }
        // Refusals of the request or the caller, and transient answers, are no declines.
        for code in [
            ErrorCode::MalformedRequest,
            ErrorCode::InvalidRequest,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::PayloadTooLarge,
            ErrorCode::MissingIdempotencyKey,
            ErrorCode::InvalidIdempotencyKey,
            ErrorCode::IdempotencyKeyReused,
            ErrorCode::IdempotencyKeyInFlight,
            ErrorCode::KeyNotFound,
            ErrorCode::Unauthorized,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::RateLimited,
            ErrorCode::ServiceUnavailable,
            ErrorCode::InternalError,
            ErrorCode::Unknown,
        ] {
            assert_eq!(code.decline_class(), None, "{}", code.as_str());
        }
        assert_eq!(
            serde_json::to_value(DeclineClass::Soft).expect("serialises"),
            DeclineClass::Soft.as_str()
        );
        assert_eq!(Hard.as_str(), "hard");
    }

    #[test]
    fn unknown_codes_are_tolerated() {
        let p: Problem = serde_json::from_str(
            r#"{"type":"urn:x","title":"t","status":418,"code":"brand_new_code"}"#,
        )
        .expect("parses");
        assert_eq!(p.code, ErrorCode::Unknown);
    }

    #[test]
    fn problem_shape() {
        let p = Problem::new(
            402,
            ErrorCode::InsufficientFunds,
            "Insufficient funds",
            Some("balance 1.00 EUR".into()),
        );
        let json = serde_json::to_value(&p).expect("serialises");
        assert_eq!(
            json["type"],
            "urn:invoice-platform:problem:insufficient_funds"
        );
        assert_eq!(json["status"], 402);
        assert_eq!(json["code"], "insufficient_funds");
    }
}
