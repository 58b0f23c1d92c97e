use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use crate::auth::Refused;
use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller's name. Put it first among a handler's arguments so a request
/// without a valid token is refused before its body is read.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let bearer = bearer(req);
        Box::pin(async move {
            let state = state
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state missing")))?;
            let bearer = bearer.ok_or(ApiError::Unauthorized)?;
            match state.auth.authenticate(&bearer).await {
                Ok(name) => Ok(Caller(name)),
                Err(Refused::KeysUnavailable(reason)) => {
                    tracing::warn!(%reason, "cannot check a service account token yet");
                    Err(ApiError::Unavailable {
                        reason: "the caller's credential cannot be checked yet".to_owned(),
                        retry_after_secs: 5,
                    })
                }
                // The reason helps whoever configures a caller; the token itself is never logged.
                Err(refused) => {
                    tracing::info!(reason = %refused, "caller refused");
                    Err(ApiError::Unauthorized)
                }
            }
        })
    }
}

/// The token of exactly one `Authorization: Bearer` header.
fn bearer(req: &HttpRequest) -> Option<String> {
    let mut values = req.headers().get_all(AUTHORIZATION);
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned())
}
