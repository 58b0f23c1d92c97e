use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use api_contract::{ChargeRequest, IdempotencyKey, PROBLEM_JSON, headers};

use super::Caller;
use crate::charging::{self, ChargeReply, LookupReply};
use crate::db::{self, DbError};
use crate::domain::ChargeCommand;
use crate::error::{ApiError, problem_response};
use crate::state::AppState;

/// Exactly one valid `Idempotency-Key` header.
pub struct KeyHeader(IdempotencyKey);

impl FromRequest for KeyHeader {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let values = req.headers().get_all(headers::IDEMPOTENCY_KEY);
        let result = match IdempotencyKey::from_header(values.map(|v| v.as_bytes())) {
            Ok(Some(key)) => Ok(KeyHeader(key)),
            Ok(None) => Err(ApiError::MissingIdempotencyKey),
            Err(why) => Err(ApiError::InvalidIdempotencyKey(why)),
        };
        ready(result)
    }
}

/// `POST /v1/charges`
pub async fn create(
    caller: Caller,
    key: KeyHeader,
    body: web::Json<ChargeRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let cmd = ChargeCommand::parse(caller.0, key.0, body.into_inner())
        .map_err(ApiError::InvalidRequest)?;
    Ok(match state.charging.charge(cmd).await? {
        ChargeReply::Created(charge) => HttpResponse::Created().json(charge),
        ChargeReply::Declined(decline) => problem_response(&decline.problem()),
        ChargeReply::Replayed { status, body } => replay(status, body),
    })
}

/// The query of a key lookup; any other parameter is refused, so a misspelt one is not
/// taken for a lookup of nothing.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupQuery {
    idempotency_key: Option<String>,
}

/// `GET /v1/charges?idempotency_key=<key>`: the caller's own key only (another caller's
/// reads as never used), answered as a replay of its charge would be.
pub async fn lookup(
    caller: Caller,
    query: web::Query<LookupQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = query
        .into_inner()
        .idempotency_key
        .ok_or(ApiError::MissingIdempotencyKey)?;
    let key =
        IdempotencyKey::parse(key).map_err(|e| ApiError::InvalidIdempotencyKey(e.to_string()))?;
    Ok(
        match state
            .charging
            .lookup(caller.0, key.as_str().to_owned())
            .await?
        {
            LookupReply::Replayed { status, body } => replay(status, body),
            LookupReply::NotFound => return Err(ApiError::KeyNotFound),
        },
    )
}

/// A stored response as it was, flagged as a replay; a stored 201 comes back as 200.
fn replay(status: u16, body: String) -> HttpResponse {
    let (status, content_type) = match status {
        201 => (actix_web::http::StatusCode::OK, "application/json"),
        s => (
            actix_web::http::StatusCode::from_u16(s)
                .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
            if s >= 400 {
                PROBLEM_JSON
            } else {
                "application/json"
            },
        ),
    };
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((
            headers::IDEMPOTENT_REPLAYED,
            HeaderValue::from_static("true"),
        ))
        .body(body)
}

/// `GET /v1/charges/{id}`: the caller's own charges only.
pub async fn get(
    caller: Caller,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let not_found = || ApiError::NotFound(format!("no charge {id}"));
    if !api_contract::is_id(&id) {
        return Err(not_found());
    }
    let lookup = id.clone();
    let charge = db::run(&state.pool, move |c| {
        db::charges::find(c, &caller.0, &lookup).map_err(DbError::from)
    })
    .await?;
    let charge = charge
        .and_then(charging::to_response)
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(charge))
}
