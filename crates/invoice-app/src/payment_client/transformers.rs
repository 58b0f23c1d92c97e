//! Wire → domain: HTTP answers of payment-provider as `CallOutcome`s.

use std::time::Duration;

use api_contract::{ChargeResponse, ErrorCode, Problem};
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::domain::{CallOutcome, LookupOutcome, decline_class};

/// `Retry-After` in seconds (the provider sends seconds; an HTTP date is ignored).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

pub fn from_send_error(e: &reqwest::Error) -> CallOutcome {
    // Our request could not even be built (a token that is no valid header value, say):
    // nothing left, and only a person can fix it.
    if e.is_builder() {
        return CallOutcome::Attention {
            reason: format!(
                "the request to payment-provider could not be built (check PAYMENT_PROVIDER_TOKEN): {}",
                root_cause(e)
            ),
        };
    }
    // Refused before anything was sent: nothing can have been charged.
    if e.is_connect() {
        return CallOutcome::Retryable {
            reason: format!("payment-provider unreachable: {}", root_cause(e)),
            retry_after: None,
        };
    }
    CallOutcome::Unknown {
        reason: if e.is_timeout() {
            "payment-provider did not answer in time".to_owned()
        } else {
            format!("request failed: {}", root_cause(e))
        },
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

pub fn from_response(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    replayed: bool,
) -> CallOutcome {
    if status == 200 || status == 201 {
        return match serde_json::from_slice::<ChargeResponse>(body) {
            Ok(charge) => CallOutcome::Succeeded { charge, replayed },
            Err(e) => CallOutcome::Unknown {
                reason: format!("unreadable charge in a {status} answer: {e}"),
            },
        };
    }
    let problem = serde_json::from_slice::<Problem>(body).ok();
    let code = problem.as_ref().map(|p| p.code);
    let detail = problem
        .as_ref()
        .and_then(|p| p.detail.clone())
        .unwrap_or_else(|| format!("HTTP {status}"));
    // Only the codes that say the charge was refused are declines, each with the status the
    // contract gives it.
    let declined = match (status, code) {
        (
            402,
            Some(
                code @ (ErrorCode::InsufficientFunds
                | ErrorCode::TryAgainLater
                | ErrorCode::AccountClosed),
            ),
        )
        | (404, Some(code @ ErrorCode::CustomerNotFound))
        | (422, Some(code @ (ErrorCode::CurrencyMismatch | ErrorCode::InvalidRequest))) => {
            decline_class(code).map(|class| (code, class))
        }
        _ => None,
    };
    if let Some((code, class)) = declined {
        return CallOutcome::Declined {
            code,
            class,
            detail,
        };
    }
    match (status, code) {
        (409 | 429 | 500..=599, _) => CallOutcome::Retryable {
            reason: format!("HTTP {status}: {detail}"),
            retry_after,
        },
        // A key conflict may hide a charge made with another body (version skew, a changed
        // fingerprint): never a decline.
        (_, Some(code)) => CallOutcome::Attention {
            reason: format!("HTTP {status} {}: {detail}", code.as_str()),
        },
        (_, None) => CallOutcome::Attention {
            reason: format!("HTTP {status} without a code this service knows: {detail}"),
        },
    }
}

/// A key lookup's answer: nothing under the key (`404 key_not_found`), or what is there,
/// read as the replay of the key's charge it is (a charge, a stored decline), or as the
/// failed call it was (409 in flight, 429, 5xx, a refused credential).
pub fn from_lookup_response(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> LookupOutcome {
    let code = serde_json::from_slice::<Problem>(body).ok().map(|p| p.code);
    if status == 404 && code == Some(ErrorCode::KeyNotFound) {
        return LookupOutcome::NotFound;
    }
    LookupOutcome::Answer(from_response(status, body, retry_after, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(status: u16, code: &str) -> Vec<u8> {
        format!(r#"{{"type":"urn:x","title":"t","status":{status},"code":"{code}","detail":"d"}}"#)
            .into_bytes()
    }

    #[test]
    fn classifies_provider_answers() {
        use api_contract::DeclineClass::{Hard, Soft};
        let declined = |s, c| match from_response(s, &problem(s, c), None, false) {
            CallOutcome::Declined { code, class, .. } => Some((code.as_str(), class)),
            _ => None,
        };
        for (status, code, class) in [
            (402, "insufficient_funds", Soft),
            (402, "try_again_later", Soft),
            (402, "account_closed", Hard),
            (404, "customer_not_found", Hard),
            (422, "currency_mismatch", Hard),
            (422, "invalid_request", Hard),
        ] {
            assert_eq!(
                declined(status, code),
                Some((code, class)),
                "{status} {code}"
            );
        }
        let retry = |s, c| {
            matches!(
                from_response(s, &problem(s, c), None, false),
                CallOutcome::Retryable { .. }
            )
        };
        assert!(retry(503, "service_unavailable"));
        assert!(retry(429, "rate_limited"));
        assert!(retry(409, "idempotency_key_in_flight"));
        assert!(retry(500, "internal_error"));
        let attention = |s, c| {
            matches!(
                from_response(s, &problem(s, c), None, false),
                CallOutcome::Attention { .. }
            )
        };
        assert!(attention(401, "unauthorized"));
        assert!(attention(400, "missing_idempotency_key"));
        // A key conflict may hide a charge: never a decline.
        assert!(attention(422, "idempotency_key_reused"));
        // A 402 whose code we do not know is not guessed to be insufficient funds.
        assert!(attention(402, "card_expired_some_day"));
        // A decline's code under another status than the contract's is not guessed either.
        assert!(attention(404, "try_again_later"));
        assert!(attention(422, "account_closed"));
        assert!(matches!(
            from_response(402, b"", None, false),
            CallOutcome::Attention { .. }
        ));
        // A 404 without the provider's code is a wrong URL, not a missing customer.
        assert!(matches!(
            from_response(404, b"<html>", None, false),
            CallOutcome::Attention { .. }
        ));
    }

    #[test]
    fn a_request_that_cannot_be_built_needs_attention() {
        // A token with a line break is no header value: nothing leaves, a person must look.
        let e = reqwest::Client::new()
            .post("http://127.0.0.1:9/v1/charges")
            .bearer_auth("token\nsecond-line")
            .build()
            .expect_err("invalid header value");
        assert!(matches!(from_send_error(&e), CallOutcome::Attention { .. }));
    }

    #[test]
    fn classifies_lookup_answers() {
        let lookup = |s, c| from_lookup_response(s, &problem(s, c), None);
        assert_eq!(lookup(404, "key_not_found"), LookupOutcome::NotFound);
        // A stored decline is the decline; a missing customer is no missing key.
        assert!(matches!(
            lookup(404, "customer_not_found"),
            LookupOutcome::Answer(CallOutcome::Declined { .. })
        ));
        assert!(matches!(
            lookup(402, "insufficient_funds"),
            LookupOutcome::Answer(CallOutcome::Declined { .. })
        ));
        assert!(matches!(
            lookup(409, "idempotency_key_in_flight"),
            LookupOutcome::Answer(CallOutcome::Retryable { .. })
        ));
        // A provider without the lookup (405), or a 404 of a wrong URL: a person looks.
        assert!(matches!(
            lookup(405, "method_not_allowed"),
            LookupOutcome::Answer(CallOutcome::Attention { .. })
        ));
        assert!(matches!(
            from_lookup_response(404, b"<html>", None),
            LookupOutcome::Answer(CallOutcome::Attention { .. })
        ));
    }

    #[test]
    fn unreadable_success_is_unknown_not_failed() {
        assert!(matches!(
            from_response(201, b"{", None, false),
            CallOutcome::Unknown { .. }
        ));
    }
}
