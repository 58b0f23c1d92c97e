use actix_web::{HttpResponse, web};
use diesel::RunQueryDsl;

use crate::db::{self, DbError};
use crate::error::ApiError;
use crate::state::AppState;

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: our own database answers. Nothing else is checked.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    db::run(&state.pool, |c| {
        diesel::sql_query("SELECT 1")
            .execute(c)
            .map_err(DbError::from)
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

/// The metrics. Always answered: `payment_provider_database_up` says whether the database
/// answered just now (a failed scrape would hide it behind `up == 0`).
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let database_up = db::run(&state.pool, |c| {
        diesel::sql_query("SELECT 1")
            .execute(c)
            .map_err(DbError::from)
    })
    .await
    .is_ok();
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(database_up)?))
}
