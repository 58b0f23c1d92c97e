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
        let values = req.headers().get_all(headers::IDEMPOTENCY_KEY);
        let result = IdempotencyKey::from_header(values.map(|v| v.as_bytes()))
            .map(OptionalKey)
            .map_err(ApiError::InvalidIdempotencyKey);
        ready(result)
    }
}
