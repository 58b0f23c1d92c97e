use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{NaiveDateTime, SecondsFormat};
use serde_json::json;

use super::invoices::InvoiceResource;
use crate::auth::Principal;
use crate::billing::{Detail, Trigger};
use crate::db::{self, DbError, pay_runs::PayRunRow};
use crate::error::ApiError;
use crate::startup::AppState;

/// `POST /invoices/pay`: pays every pending invoice and answers when done.
pub async fn pay_now(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let run = state
        .biller
        .open_run(Trigger::Api, Some(principal.name().to_owned()))
        .await?;
    let report = state.biller.spawn_pay(run, Detail::Itemised).await?;
    if let Some(error) = &report.error {
        // What it settled is on the run's row; say where, and why it stopped.
        let (id, s) = (&report.run_id, report.summary);
        return Err(ApiError::Unavailable {
            reason: format!(
                "pay run {id} stopped after {} paid, {} failed and {} handed back: {error}; see /pay-runs/{id}",
                s.paid, s.failed, s.retry_later
            ),
            retry_after_secs: 5,
        });
    }
    let retry_later: Vec<_> = report
        .retry_later
        .iter()
        .map(|r| json!({"invoice_id": r.invoice_id, "reason": r.reason}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "run_id": report.run_id,
        "status": "completed",
        "summary": report.summary,
        "paid": report.paid.into_iter().map(InvoiceResource::from).collect::<Vec<_>>(),
        "failed": report.failed.into_iter().map(InvoiceResource::from).collect::<Vec<_>>(),
        "retry_later": retry_later,
    })))
}

/// `POST /pay-runs`: starts a run in the background; poll `GET /pay-runs/{id}`.
pub async fn start(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let run = state
        .biller
        .open_run(Trigger::Api, Some(principal.name().to_owned()))
        .await?;
    let id = run.row.id.clone();
    drop(state.biller.spawn_pay(run, Detail::Counts));
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/pay-runs/{id}")))
        .json(json!({"id": id, "status": "running"})))
}

/// `GET /pay-runs/{id}`
pub async fn get(
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let not_found = || ApiError::NotFound(format!("no pay run {id}"));
    if !api_contract::is_id(&id) {
        return Err(not_found());
    }
    let lookup = id.clone();
    let run = db::run(&state.pool, move |c| {
        db::pay_runs::find(c, &lookup).map_err(DbError::from)
    })
    .await?
    .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(resource(run)))
}

fn resource(run: PayRunRow) -> serde_json::Value {
    let time = |t: NaiveDateTime| t.and_utc().to_rfc3339_opts(SecondsFormat::Millis, true);
    json!({
        "id": run.id,
        "status": run.status,
        "trigger": run.trigger,
        "started_at": time(run.started_at),
        "finished_at": run.finished_at.map(time),
        "summary": {"paid": run.paid, "failed": run.failed, "retry_later": run.retry_later},
        "error": run.error,
        "started_by": run.started_by,
    })
}
