use actix_web::{HttpResponse, web};
use api_contract::{AccountResponse, CustomerId, Money};

use super::Caller;
use crate::db::{self, DbError};
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /v1/accounts/{customer_id}`: the balance left on an account.
pub async fn get(
    _caller: Caller,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let not_found = || ApiError::NotFound(format!("no account for customer {id}"));
    let customer_id = CustomerId::parse(id.clone()).map_err(|_| not_found())?;
    let lookup = customer_id.clone();
    let account = db::run(&state.pool, move |c| {
        db::accounts::find(c, lookup.as_str()).map_err(DbError::from)
    })
    .await?
    .ok_or_else(not_found)?;
    let currency = account
        .currency
        .parse()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored currency: {e}")))?;
    let balance = Money::new(account.balance_minor, currency)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored balance: {e}")))?;
    Ok(HttpResponse::Ok().json(AccountResponse {
        customer_id,
        balance,
    }))
}
