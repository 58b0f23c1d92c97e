use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::doc::Doc;
use crate::db;
use crate::error::ApiError;
use crate::metrics::Snapshot;
use crate::state::AppState;

/// The answer of `/healthz` (`ok`) and `/readyz` (`ready`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    status: HealthStatus,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum HealthStatus {
    Ok,
    Ready,
}

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: HealthStatus::Ok,
    })
}

pub fn healthz_doc() -> Doc {
    Doc::new("healthz").answers::<Health>(200, "The process is alive.")
}

/// Readiness: our own database answers. payment-provider is deliberately not checked: its
/// outage must not take invoice-app out of its Service.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    db::ping(&state.pool).await?;
    Ok(HttpResponse::Ok().json(Health {
        status: HealthStatus::Ready,
    }))
}

pub fn readyz_doc() -> Doc {
    Doc::new("readyz")
        .answers::<Health>(200, "The database answers.")
        .problem(503, "The database does not answer.")
}

/// The metrics, with the gauges read from the database now. Always answered: when the
/// database does not answer, `invoice_app_database_up 0` says so (a failed scrape would
/// hide it behind `up == 0`).
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let snapshot = Snapshot::read(&state.pool, state.biller.lease()).await;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(snapshot.as_ref())?))
}
