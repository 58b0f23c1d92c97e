//! Authentication and authorisation at the edge. Each scoped API route is wrapped in
//! [`require`] with the scope its row of the route table names, so a request is refused
//! before its body is read or its handler runs; a handler that records who acted takes the
//! [`Principal`] the middleware left in the request.

use std::future::{Ready, ready};

use actix_web::body::BoxBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, web};

use crate::auth::{AuthError, Principal, Scope};
use crate::error::ApiError;
use crate::state::AppState;

/// Lets the request through with a credential that holds `scope`: 401 without one, 403
/// without the scope.
pub async fn require(
    scope: Scope,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let principal = authenticate(req.request()).await?;
    tracing::Span::current().record("enduser.id", principal.name());
    if !principal.may(scope) {
        tracing::info!(principal = principal.name(), %scope, "refused: scope missing");
        return Err(ApiError::InsufficientScope(scope).into());
    }
    req.extensions_mut().insert(principal);
    next.call(req).await
}

async fn authenticate(req: &HttpRequest) -> Result<Principal, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state missing")))?;
    let token = bearer(req)?;
    state.auth.authenticate(token).await.map_err(|e| {
        tracing::debug!(reason = %e, "refused: not authenticated");
        e.into()
    })
}

/// The token of the one `Authorization: Bearer` header. Another scheme counts as no
/// credential at all, as RFC 6750 has it.
fn bearer(req: &HttpRequest) -> Result<&str, AuthError> {
    let mut values = req.headers().get_all(AUTHORIZATION);
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(AuthError::Missing),
        (Some(value), None) => value,
        (Some(_), Some(_)) => return Err(AuthError::Malformed),
    };
    let text = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = token.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    /// Only a route wrapped in a `require_*` middleware has one; elsewhere this refuses
    /// rather than lets a wiring mistake through.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Principal>()
                .cloned()
                .ok_or(ApiError::Unauthorized(AuthError::Missing)),
        )
    }
}
