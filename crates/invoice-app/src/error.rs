//! Error policy: `db` functions return diesel errors, `billing` returns `BillingError`,
//! `invoices` `OnceError` or `ReadError` and `auth` `AuthError`; handlers and the auth
//! middleware turn them into `ApiError` where the meaning is known (a database that is down
//! is a 503, never a 500), and this file alone renders errors as `application/problem+json`
//! with a stable `code` from invoice-app's own catalogue ([`ErrorCode`]). The codes
//! payment-provider answers the charge call with are `api_contract::ErrorCode`, read by
//! `payment_client`; a new error of this API changes only this file.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, error::JsonPayloadError};
use api_contract::PROBLEM_JSON;
use serde::Serialize;
use strum::{EnumIter, IntoStaticStr};
use utoipa::ToSchema;

use crate::actions::ActionError;
use crate::auth::{AuthError, Scope};
use crate::billing::BillingError;
use crate::db::DbError;
use crate::domain::Refusal;
use crate::invoices::{OnceError, ReadError};

/// invoice-app's stable error codes. Clients branch on these, never on `title` or `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema, EnumIter, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not well-formed JSON.
    MalformedRequest,
    /// Well-formed, but a field or query parameter is missing, of the wrong type or out of
    /// range.
    InvalidRequest,
    UnsupportedMediaType,
    PayloadTooLarge,
    InvalidIdempotencyKey,
    /// The client sent the key before with another request.
    IdempotencyKeyReused,
    Unauthorized,
    /// Authenticated, but the credential lacks the scope the operation needs.
    InsufficientScope,
    NotFound,
    MethodNotAllowed,
    /// An operator action on an invoice a pay run is charging: try again once it settles.
    InvoiceProcessing,
    /// An operator action on a paid, failed, uncollectible or void invoice.
    InvoiceSettled,
    /// A retry of an invoice that needs attention: resolve it first.
    InvoiceNeedsAttention,
    /// A resolve of an invoice that needs no attention.
    NothingToResolve,
    /// A valid action this release does not offer yet.
    ActionNotAvailable,
    RateLimited,
    ServiceUnavailable,
    InternalError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// An `application/problem+json` body (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:invoice-platform:problem:<code>`
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
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

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed request: {0}")]
    MalformedRequest(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("bad query: {0}")]
    BadQuery(String),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("invalid Idempotency-Key: {0}")]
    InvalidIdempotencyKey(String),
    /// The client sent the key before with another request (422).
    #[error("Idempotency-Key reused")]
    IdempotencyKeyReused,
    #[error("not found: {0}")]
    NotFound(String),
    /// No usable credential (401 with an RFC 6750 challenge).
    #[error("unauthorized: {0}")]
    Unauthorized(AuthError),
    /// A valid credential without the scope the operation needs (403).
    #[error("insufficient scope: {0} needed")]
    InsufficientScope(Scope),
    /// An operator action the invoice as it stands does not admit (409).
    #[error("refused: {0}")]
    Refused(Refusal),
    /// A valid action this release does not offer yet (422).
    #[error("not available: {0}")]
    NotAvailable(String),
    /// With the methods the resource does answer, for the `Allow` header.
    #[error("method not allowed")]
    MethodNotAllowed { allow: String },
    #[error("unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after_secs: u32,
    },
    /// Too much of this kind of work in progress; try again later.
    #[error("busy: {reason}")]
    Busy {
        reason: String,
        retry_after_secs: u32,
    },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    fn problem(&self) -> Problem {
        use ApiError as E;
        let (status, code, title, detail) = match self {
            E::MalformedRequest(d) => (
                400,
                ErrorCode::MalformedRequest,
                "Malformed request",
                Some(d.clone()),
            ),
            E::InvalidRequest(d) => (
                422,
                ErrorCode::InvalidRequest,
                "Invalid request",
                Some(d.clone()),
            ),
            E::BadQuery(d) => (
                400,
                ErrorCode::InvalidRequest,
                "Invalid query",
                Some(d.clone()),
            ),
            E::UnsupportedMediaType => (
                415,
                ErrorCode::UnsupportedMediaType,
                "Unsupported media type",
                Some("send the body as application/json".to_owned()),
            ),
            E::PayloadTooLarge => (413, ErrorCode::PayloadTooLarge, "Payload too large", None),
            E::InvalidIdempotencyKey(d) => (
                400,
                ErrorCode::InvalidIdempotencyKey,
                "Invalid Idempotency-Key",
                Some(d.clone()),
            ),
            E::IdempotencyKeyReused => (
                422,
                ErrorCode::IdempotencyKeyReused,
                "Idempotency-Key reused",
                Some(
                    "this client sent the key before with another request; a new invoice needs a new key"
                        .to_owned(),
                ),
            ),
            E::NotFound(d) => (404, ErrorCode::NotFound, "Not found", Some(d.clone())),
            E::Unauthorized(e) => (
                401,
                ErrorCode::Unauthorized,
                "Unauthorized",
                Some(match e {
                    AuthError::Missing => {
                        "send a bearer token or API key: Authorization: Bearer <credential>"
                            .to_owned()
                    }
                    other => other.to_string(),
                }),
            ),
            E::InsufficientScope(scope) => (
                403,
                ErrorCode::InsufficientScope,
                "Insufficient scope",
                Some(format!("this operation needs the scope {scope}")),
            ),
            E::Refused(refusal) => {
                let code = match refusal {
                    Refusal::Processing => ErrorCode::InvoiceProcessing,
                    Refusal::Settled(_) => ErrorCode::InvoiceSettled,
                    Refusal::NeedsAttention => ErrorCode::InvoiceNeedsAttention,
                    Refusal::NoAttention => ErrorCode::NothingToResolve,
                };
                (409, code, "Conflict", Some(refusal.to_string()))
            }
            E::NotAvailable(d) => (
                422,
                ErrorCode::ActionNotAvailable,
                "Not available",
                Some(d.clone()),
            ),
            E::MethodNotAllowed { allow } => (
                405,
                ErrorCode::MethodNotAllowed,
                "Method not allowed",
                Some(format!("this resource answers {allow}")),
            ),
            E::Busy { reason, .. } => (
                429,
                ErrorCode::RateLimited,
                "Too many requests",
                Some(reason.clone()),
            ),
            E::Unavailable { reason, .. } => (
                503,
                ErrorCode::ServiceUnavailable,
                "Service unavailable",
                Some(reason.clone()),
            ),
            E::Internal(_) => (500, ErrorCode::InternalError, "Internal error", None),
        };
        Problem::new(status, code, title, detail)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(reason) => {
                tracing::warn!(%reason, "database unavailable");
                ApiError::Unavailable {
                    reason: "the database is unavailable".to_owned(),
                    retry_after_secs: 1,
                }
            }
            DbError::Query(e) => ApiError::Internal(e.into()),
        }
    }
}

impl From<OnceError> for ApiError {
    fn from(e: OnceError) -> Self {
        match e {
            OnceError::KeyReused => ApiError::IdempotencyKeyReused,
            OnceError::Db(e) => e.into(),
            OnceError::Corrupt(e) => ApiError::Internal(anyhow::anyhow!(e)),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Db(e) => e.into(),
            ReadError::Corrupt(e) => ApiError::Internal(anyhow::anyhow!(e)),
        }
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::NotFound => ApiError::NotFound("no such invoice".to_owned()),
            ActionError::Refused(refusal) => ApiError::Refused(refusal),
            ActionError::Db(e) => e.into(),
            ActionError::Billing(e) => e.into(),
            ActionError::Corrupt(e) => ApiError::Internal(anyhow::anyhow!(e)),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            // Not the caller's fault: their token may be fine once the keys can be had.
            AuthError::IssuerUnavailable => ApiError::Unavailable {
                reason: e.to_string(),
                retry_after_secs: 5,
            },
            other => ApiError::Unauthorized(other),
        }
    }
}

/// The `WWW-Authenticate` challenge of a 401 or 403 (RFC 6750, section 3).
fn challenge(error: &ApiError) -> Option<HeaderValue> {
    const REALM: &str = r#"Bearer realm="invoice-app""#;
    let value = match error {
        ApiError::Unauthorized(AuthError::Missing) => REALM.to_owned(),
        ApiError::Unauthorized(AuthError::Malformed) => {
            format!(r#"{REALM}, error="invalid_request""#)
        }
        ApiError::Unauthorized(_) => format!(r#"{REALM}, error="invalid_token""#),
        ApiError::InsufficientScope(scope) => {
            format!(r#"{REALM}, error="insufficient_scope", scope="{scope}""#)
        }
        _ => return None,
    };
    HeaderValue::from_str(&value).ok()
}

impl From<BillingError> for ApiError {
    fn from(e: BillingError) -> Self {
        match e {
            BillingError::Db(e) => e.into(),
            BillingError::ShuttingDown => ApiError::Unavailable {
                reason: "shutting down".to_owned(),
                retry_after_secs: 5,
            },
            BillingError::Busy(max) => ApiError::Busy {
                reason: format!(
                    "{max} pay runs are in progress already; they pay every pending invoice, so try again when one has finished"
                ),
                retry_after_secs: 5,
            },
            BillingError::RunClosed => ApiError::Unavailable {
                reason: BillingError::RunClosed.to_string(),
                retry_after_secs: 5,
            },
            BillingError::Corrupt(e) | BillingError::Aborted(e) => {
                ApiError::Internal(anyhow::anyhow!(e))
            }
            // What it settled is on the run's row: say where, and why it stopped.
            BillingError::Stopped(stopped) => ApiError::Unavailable {
                reason: format!("{stopped}; see /pay-runs/{}", stopped.run_id),
                retry_after_secs: 5,
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.problem().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(e) = self {
            tracing::error!(error = %format!("{e:#}"), "internal error");
        }
        let mut response = problem_response(&self.problem());
        match self {
            ApiError::Unavailable {
                retry_after_secs, ..
            }
            | ApiError::Busy {
                retry_after_secs, ..
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::MethodNotAllowed { allow } => {
                if let Ok(value) = HeaderValue::from_str(allow) {
                    response.headers_mut().insert(header::ALLOW, value);
                }
            }
            _ => {}
        }
        if let Some(value) = challenge(self) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

pub fn problem_response(problem: &Problem) -> HttpResponse {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, PROBLEM_JSON))
        .json(problem)
}

/// JSON body errors: syntax errors are 400, well-formed bodies with wrong content are 422.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::PayloadTooLarge
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::InvalidRequest(e.to_string()),
        JsonPayloadError::Deserialize(e) => ApiError::MalformedRequest(e.to_string()),
        other => ApiError::MalformedRequest(other.to_string()),
    };
    api.into()
}

pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &HttpRequest,
) -> actix_web::Error {
    ApiError::BadQuery(err.to_string()).into()
}

pub fn path_error(err: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound(err.to_string()).into()
}

#[cfg(test)]
mod tests {
    use strum::IntoEnumIterator;

    use super::*;

    #[test]
    fn code_serialises_as_its_stable_name() {
        for code in ErrorCode::iter() {
            let json = serde_json::to_value(code).expect("serialises");
            assert_eq!(json, serde_json::Value::String(code.as_str().to_owned()));
        }
        assert_eq!(ErrorCode::InsufficientScope.as_str(), "insufficient_scope");
        assert_eq!(ErrorCode::MethodNotAllowed.as_str(), "method_not_allowed");
    }

    #[test]
    fn problem_shape() {
        let p = Problem::new(
            403,
            ErrorCode::InsufficientScope,
            "Insufficient scope",
            Some("this operation needs the scope invoices:read".into()),
        );
        let json = serde_json::to_value(&p).expect("serialises");
        assert_eq!(
            json["type"],
            "urn:invoice-platform:problem:insufficient_scope"
        );
        assert_eq!(json["status"], 403);
        assert_eq!(json["code"], "insufficient_scope");
        let bare = Problem::new(413, ErrorCode::PayloadTooLarge, "Payload too large", None);
        let json = serde_json::to_value(&bare).expect("serialises");
        assert!(json.get("detail").is_none(), "{json}");
    }

    /// invoice-app's codes that payment-provider also answers with keep the contract's
    /// names: a client that reads both services' problems sees one name for one meaning.
    #[test]
    fn shared_codes_keep_the_contracts_names() {
        for code in ErrorCode::iter() {
            let contract: api_contract::ErrorCode =
                serde_json::from_value(serde_json::to_value(code).expect("serialises"))
                    .expect("parses");
            match code {
                // invoice-app's own: the provider never answers these.
                ErrorCode::InsufficientScope
                | ErrorCode::InvoiceProcessing
                | ErrorCode::InvoiceSettled
                | ErrorCode::InvoiceNeedsAttention
                | ErrorCode::NothingToResolve
                | ErrorCode::ActionNotAvailable => {
                    assert_eq!(contract, api_contract::ErrorCode::Unknown)
                }
                _ => assert_eq!(contract.as_str(), code.as_str()),
            }
        }
    }
}
