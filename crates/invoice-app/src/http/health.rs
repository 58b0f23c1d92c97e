use actix_web::{HttpResponse, web};
use diesel::RunQueryDsl;

use crate::db::{self, DbError};
use crate::error::ApiError;
use crate::startup::AppState;

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: our own database answers. payment-provider is deliberately not checked: its
/// outage must not take invoice-app out of its Service.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    db::run(&state.pool, |c| {
        diesel::sql_query("SELECT 1")
            .execute(c)
            .map_err(DbError::from)
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let counts = db::run(&state.pool, |c| {
        db::invoices::count_by_status(c).map_err(DbError::from)
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(&counts)?))
}

/// The OpenAPI 3.1 document of this API.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::OPENAPI_JSON)
}
