use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{NaiveDateTime, SecondsFormat};
use serde::Serialize;
use serde_json::json;

use super::invoices::InvoiceResource;
use crate::auth::{Principal, Scope};
use crate::billing::{Detail, RetryLater, Summary, Trigger};
use crate::db::{self, pay_runs::PayRunRow};
use crate::domain::{RunId, RunStatus};
use crate::error::ApiError;
use crate::state::AppState;

/// The answer of `POST /invoices/pay`. Starting a run needs `invoices:pay` only, which lets
/// a caller move money but not read invoices: the invoices the run settled are listed only
/// for a caller that also holds `invoices:read`; the others get the run and its counts.
#[derive(Debug, Serialize)]
struct PayReportResource {
    run_id: RunId,
    status: RunStatus,
    summary: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    paid: Option<Vec<InvoiceResource>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<Vec<InvoiceResource>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_later: Option<Vec<RetryLater>>,
}

/// `POST /invoices/pay`: pays every pending invoice and answers when done.
pub async fn pay_now(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let itemised = principal.may(Scope::Read);
    let run = state
        .biller
        .open_run(Trigger::Api, Some(principal.name().to_owned()))
        .await?;
    let detail = if itemised {
        Detail::Itemised
    } else {
        Detail::Counts
    };
    let report = state.biller.spawn_pay(run, detail).await?;
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
    let items = |invoices: Vec<_>| invoices.into_iter().map(InvoiceResource::from).collect();
    let answer = PayReportResource {
        run_id: report.run_id,
        status: RunStatus::Completed,
        summary: report.summary,
        paid: itemised.then(|| items(report.paid)),
        failed: itemised.then(|| items(report.failed)),
        retry_later: itemised.then_some(report.retry_later),
    };
    Ok(HttpResponse::Ok().json(answer))
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
        .json(json!({"id": id, "status": RunStatus::Running})))
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
    let lookup = RunId::from(id.clone());
    let run = db::read(&state.pool, move |c| db::pay_runs::find(c, &lookup))
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
