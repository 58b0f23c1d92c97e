use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};

use crate::error::ApiError;
use crate::startup::AppState;

/// The authenticated caller. Put it first among a handler's arguments so a request without
/// a valid token is refused before its body is read.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state missing")))?;
    let mut values = req.headers().get_all(AUTHORIZATION);
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::Unauthorized);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or(ApiError::Unauthorized)?;
    state
        .callers
        .authenticate(token)
        .map(|name| Caller(name.to_owned()))
        .ok_or(ApiError::Unauthorized)
}
