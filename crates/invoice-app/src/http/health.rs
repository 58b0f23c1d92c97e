use std::time::Duration;

use actix_web::{HttpResponse, web};
use chrono::{NaiveDateTime, TimeDelta};
use diesel::RunQueryDsl;

use crate::db;
use crate::error::ApiError;
use crate::metrics::{RECENT, Snapshot};
use crate::state::AppState;

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: our own database answers. payment-provider is deliberately not checked: its
/// outage must not take invoice-app out of its Service.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    db::read(&state.pool, |c| diesel::sql_query("SELECT 1").execute(c)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

/// How long a scrape waits for the database: well within Prometheus's default scrape
/// timeout (10 s), so a hung database reads as down rather than as a failed scrape.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);

/// The metrics, with the gauges read from the database now. Always answered: when the
/// database does not answer, `invoice_app_database_up 0` says so (a failed scrape would
/// hide it behind `up == 0`).
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // A run is alive while its heartbeat is younger than a lease (as `close_abandoned` says).
    let lease = TimeDelta::from_std(state.biller.lease()).unwrap_or(TimeDelta::MAX);
    let read = db::read(&state.pool, move |c| snapshot(c, lease));
    let snapshot = match tokio::time::timeout(SNAPSHOT_TIMEOUT, read).await {
        Ok(Ok(snapshot)) => Some(snapshot),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: the database did not answer");
            None
        }
        Err(_) => {
            tracing::warn!(timeout = ?SNAPSHOT_TIMEOUT, "metrics: the database did not answer in time");
            None
        }
    };
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(snapshot.as_ref())?))
}

fn snapshot(c: &mut db::AnyConnection, lease: TimeDelta) -> diesel::QueryResult<Snapshot> {
    let now = chrono::Utc::now().naive_utc();
    let (runs_by_status, run_invoices) = db::pay_runs::totals(c)?;
    let (recent_attempts, recent_unanswered) = db::attempts::recent(c, now - RECENT)?;
    Ok(Snapshot {
        runs_by_status,
        run_invoices,
        recent_attempts,
        recent_unanswered,
        invoices_by_status: db::invoices::count_by_status(c)?,
        attention: db::invoices::count_attention(c)?,
        lease_expired: db::invoices::count_lease_expired(
            c,
            now,
            now.checked_sub_signed(lease).unwrap_or(NaiveDateTime::MIN),
        )?,
        oldest_running_started: db::pay_runs::oldest_running(c)?,
        oldest_unsettled_attempt: db::attempts::oldest_unsettled(c)?,
        last_completed: db::pay_runs::last_completed(c)?,
        now,
    })
}

/// The OpenAPI 3.1 document of this API.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::OPENAPI_JSON)
}
