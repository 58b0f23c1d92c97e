//! Error bodies: RFC 9457 problem details with a stable machine-readable `code`.

use serde::{Deserialize, Serialize};

/// Stable error codes. Clients branch on these, never on `title` or `detail`.
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
    Unauthorized,
    /// Authenticated, but the credential lacks the scope the operation needs.
    InsufficientScope,
    NotFound,
    MethodNotAllowed,
    CustomerNotFound,
    InsufficientFunds,
    CurrencyMismatch,
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
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::CustomerNotFound => "customer_not_found",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::CurrencyMismatch => "currency_mismatch",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ServiceUnavailable => "service_unavailable",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::Unknown => "unknown",
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
            ErrorCode::CurrencyMismatch,
            ErrorCode::InsufficientScope,
        ] {
            let json = serde_json::to_value(code).expect("serialises");
            assert_eq!(json, serde_json::Value::String(code.as_str().to_owned()));
        }
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
