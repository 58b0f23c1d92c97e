//! The optional `Idempotency-Key` header of a create (validated as payment-provider's).

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use api_contract::{IdempotencyKey, headers};

use crate::error::ApiError;

/// No `Idempotency-Key` header, or exactly one valid one (1–255 visible ASCII characters).
/// A bad one is a 400, never ignored: the client meant the request to be made once.
pub struct OptionalKey(pub Option<IdempotencyKey>);

impl FromRequest for OptionalKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let mut values = req.headers().get_all(headers::IDEMPOTENCY_KEY);
        let result = match (values.next(), values.next()) {
            (None, _) => Ok(OptionalKey(None)),
            (Some(_), Some(_)) => Err(ApiError::InvalidIdempotencyKey(
                "send the header once".into(),
            )),
            (Some(value), None) => value
                .to_str()
                .map_err(|_| ApiError::InvalidIdempotencyKey("not visible ASCII".into()))
                .and_then(|v| {
                    IdempotencyKey::parse(v)
                        .map_err(|e| ApiError::InvalidIdempotencyKey(e.to_string()))
                })
                .map(|key| OptionalKey(Some(key))),
        };
        ready(result)
    }
}
