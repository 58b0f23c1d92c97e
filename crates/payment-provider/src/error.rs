//! Error policy: `db` functions return diesel errors; the charging service turns the ones
//! whose meaning it knows into its own `ChargeError` (a taken key is a 409, never a 500);
//! handlers return `ApiError` only, and this file alone renders errors as
//! `application/problem+json` with a stable `code`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, error::JsonPayloadError};
use api_contract::{ErrorCode, PROBLEM_JSON, Problem};

use crate::charging::ChargeError;
use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed request: {0}")]
    MalformedRequest(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("missing Idempotency-Key header")]
    MissingIdempotencyKey,
    #[error("invalid Idempotency-Key: {0}")]
    InvalidIdempotencyKey(String),
    #[error("Idempotency-Key reused with a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is in flight")]
    IdempotencyKeyInFlight,
    /// A key lookup of a key this caller never used.
    #[error("no charge request with this idempotency key")]
    KeyNotFound,
    #[error("unauthorized")]
    Unauthorized,
    #[error("not found: {0}")]
    NotFound(String),
    /// With the methods the resource does answer, for the `Allow` header.
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    /// Only injected (`FAULT_RATE_LIMITED_RATE`): the provider limits no one by itself.
    #[error("rate limited")]
    RateLimited { retry_after_secs: u32 },
    #[error("unavailable: {reason}")]
    Unavailable {
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
            E::UnsupportedMediaType => (
                415,
                ErrorCode::UnsupportedMediaType,
                "Unsupported media type",
                Some("send the body as application/json".to_owned()),
            ),
            E::PayloadTooLarge => (413, ErrorCode::PayloadTooLarge, "Payload too large", None),
            E::MissingIdempotencyKey => (
                400,
                ErrorCode::MissingIdempotencyKey,
                "Missing Idempotency-Key",
                Some(
                    "send one Idempotency-Key header of 1 to 255 visible ASCII characters"
                        .to_owned(),
                ),
            ),
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
                Some("this key was used with a different request body".to_owned()),
            ),
            E::IdempotencyKeyInFlight => (
                409,
                ErrorCode::IdempotencyKeyInFlight,
                "Request in flight",
                Some("a request with this key is still being processed; retry later".to_owned()),
            ),
            E::KeyNotFound => (
                404,
                ErrorCode::KeyNotFound,
                "Idempotency key not found",
                Some("no charge was requested with this idempotency key".to_owned()),
            ),
            E::Unauthorized => (
                401,
                ErrorCode::Unauthorized,
                "Unauthorized",
                Some("send a valid bearer token".to_owned()),
            ),
            E::NotFound(d) => (404, ErrorCode::NotFound, "Not found", Some(d.clone())),
            E::MethodNotAllowed { allow } => (
                405,
                ErrorCode::MethodNotAllowed,
                "Method not allowed",
                Some(format!("this resource answers {allow}")),
            ),
            E::RateLimited { .. } => (
                429,
                ErrorCode::RateLimited,
                "Too many requests",
                Some("slow down: retry after the time Retry-After gives".to_owned()),
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

impl From<ChargeError> for ApiError {
    fn from(e: ChargeError) -> Self {
        match e {
            ChargeError::Unavailable {
                reason,
                retry_after_secs,
            } => ApiError::Unavailable {
                reason,
                retry_after_secs,
            },
            ChargeError::RateLimited { retry_after_secs } => {
                ApiError::RateLimited { retry_after_secs }
            }
            ChargeError::KeyInFlight => ApiError::IdempotencyKeyInFlight,
            ChargeError::KeyReused => ApiError::IdempotencyKeyReused,
            ChargeError::Db(e) => e.into(),
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
        let headers = response.headers_mut();
        match self {
            ApiError::Unavailable {
                retry_after_secs, ..
            }
            | ApiError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        response
    }
}

/// Renders a problem body with its status and media type.
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

/// Path segments that do not parse (e.g. an id of the wrong shape) are a 404.
pub fn path_error(err: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound(err.to_string()).into()
}

/// A query string that does not parse (an unknown parameter, one given twice) is a 400.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &HttpRequest,
) -> actix_web::Error {
    ApiError::MalformedRequest(err.to_string()).into()
}
