use actix_web::http::header;
use actix_web::{HttpResponse, web};
use api_contract::InvoiceId;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use strum::IntoEnumIterator;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{PartialSchema, ToSchema};

use super::doc::{self, Doc};
use super::invoices::InvoiceResource;
use crate::auth::{Principal, Scope};
use crate::billing::{Detail, PayRunReport, RetryLater};
use crate::domain::{RunId, RunKind, RunStatus, Summary, Trigger};
use crate::error::ApiError;
use crate::pay_runs::{self, PayRun};
use crate::state::AppState;

/// The run and its counts. `paid`, `failed` and `retry_later` list the invoices only when
/// the caller also holds `invoices:read`; a caller with `invoices:pay` alone gets the
/// counts.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PayReport)]
struct PayReportResource {
    #[schema(value_type = String)]
    run_id: RunId,
    #[schema(schema_with = completed)]
    status: RunStatus,
    summary: SummaryResource,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    paid: Option<Vec<InvoiceResource>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    failed: Option<Vec<InvoiceResource>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    retry_later: Option<Vec<RetryLaterResource>>,
}

impl PayReportResource {
    /// A report listing the invoices (`itemised`) or only counting them. Starting a run
    /// needs `invoices:pay` only, which lets a caller move money but not read invoices.
    fn new(report: PayRunReport, itemised: bool) -> Self {
        let items = |invoices: Vec<_>| invoices.into_iter().map(InvoiceResource::from).collect();
        PayReportResource {
            run_id: report.run_id,
            status: report.status,
            summary: report.summary.into(),
            paid: itemised.then(|| items(report.paid)),
            failed: itemised.then(|| items(report.failed)),
            retry_later: itemised.then(|| report.retry_later.into_iter().map(Into::into).collect()),
        }
    }
}

/// The invoices a run settled, by result.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Summary)]
struct SummaryResource {
    #[schema(minimum = 0)]
    paid: i64,
    #[schema(minimum = 0)]
    failed: i64,
    /// Handed back to pending for a later run (its retry budget spent, or needing
    /// attention).
    #[schema(minimum = 0)]
    retry_later: i64,
}

impl From<Summary> for SummaryResource {
    fn from(s: Summary) -> Self {
        SummaryResource {
            paid: s.paid,
            failed: s.failed,
            retry_later: s.retry_later,
        }
    }
}

/// An invoice a run handed back, and why.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RetryLater)]
struct RetryLaterResource {
    #[schema(value_type = String)]
    invoice_id: InvoiceId,
    reason: String,
}

impl From<RetryLater> for RetryLaterResource {
    fn from(r: RetryLater) -> Self {
        RetryLaterResource {
            invoice_id: r.invoice_id,
            reason: r.reason,
        }
    }
}

/// `POST /invoices/pay`: pays every pending invoice and answers when done. The invoices the
/// run settled are listed only for a caller that also holds `invoices:read`.
pub async fn pay_now(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let itemised = principal.may(Scope::Read);
    let detail = if itemised {
        Detail::Itemised
    } else {
        Detail::Counts
    };
    let report = state
        .biller
        .pay_now(principal.name().to_owned(), detail)
        .await?;
    Ok(HttpResponse::Ok().json(PayReportResource::new(report, itemised)))
}

/// The answers of a run that cannot start now: too many in progress, or stopping.
fn busy(doc: Doc) -> Doc {
    doc.problem_with(
        429,
        "PAY_MAX_RUNS runs are in progress in this process already; they pay every pending \
         invoice. Retry after the Retry-After seconds.",
        [("Retry-After", doc::header(doc::integer(), None, false))],
    )
    .problem(
        503,
        "Database unavailable or shutting down, or the token issuer's keys cannot be fetched \
         yet.",
    )
}

pub fn pay_now_doc() -> Doc {
    busy(
        Doc::new("payInvoices")
            .summary("Pay every pending invoice now and report each outcome.")
            .answers::<PayReportResource>(200, "The run finished."),
    )
}

/// The answer of `POST /pay-runs`: follow the `Location` header.
#[derive(Debug, Serialize, ToSchema)]
struct PayRunStarted {
    #[schema(value_type = String)]
    id: RunId,
    #[schema(schema_with = running)]
    status: RunStatus,
}

/// `POST /pay-runs`: starts a run in the background; poll `GET /pay-runs/{id}`.
pub async fn start(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = state.biller.start(principal.name().to_owned()).await?;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/pay-runs/{id}")))
        .json(PayRunStarted {
            id,
            status: RunStatus::Running,
        }))
}

pub fn start_doc() -> Doc {
    busy(
        Doc::new("startPayRun")
            .summary("Start a pay run in the background.")
            .answers_with::<PayRunStarted>(
                202,
                "Started; follow the Location header.",
                [("Location", doc::header(doc::string(), None, false))],
            ),
    )
}

/// A pay run as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PayRun)]
struct PayRunResource {
    #[schema(value_type = String)]
    id: RunId,
    #[schema(schema_with = run_status)]
    status: RunStatus,
    #[schema(inline)]
    trigger: Trigger,
    #[schema(schema_with = run_kind)]
    kind: RunKind,
    #[schema(format = DateTime)]
    started_at: String,
    #[schema(required = true, format = DateTime)]
    finished_at: Option<String>,
    summary: SummaryResource,
    #[schema(required = true)]
    error: Option<String>,
    /// Who started it through the API: jwt:<sub>, key:<client> or dev; null for the
    /// schedule and the CLI.
    #[schema(required = true, examples("jwt:248289761001", "key:ci", "dev"))]
    started_by: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<PayRun> for PayRunResource {
    fn from(run: PayRun) -> Self {
        PayRunResource {
            id: run.id,
            status: run.status,
            trigger: run.trigger,
            kind: run.kind,
            started_at: rfc3339(run.started_at),
            finished_at: run.finished_at.map(rfc3339),
            summary: run.summary.into(),
            error: run.error,
            started_by: run.started_by,
        }
    }
}

/// `GET /pay-runs/{id}`
pub async fn get(
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let not_found = || ApiError::NotFound(format!("no pay run {id}"));
    // Anything but an id names nothing: answered before any query.
    if !api_contract::is_id(&id) {
        return Err(not_found());
    }
    let run = pay_runs::get(&state.pool, RunId::from(id.clone()))
        .await?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(PayRunResource::from(run)))
}

pub fn get_doc() -> Doc {
    Doc::new("getPayRun")
        .path_param("id")
        .answers::<PayRunResource>(200, "The run.")
        .problem(404, "No such run.")
}

impl PartialSchema for RunStatus {
    fn schema() -> RefOr<Schema> {
        doc::one_of_texts(RunStatus::iter().map(RunStatus::as_str)).into()
    }
}

impl ToSchema for RunStatus {}

impl PartialSchema for Trigger {
    fn schema() -> RefOr<Schema> {
        doc::one_of_texts(Trigger::iter().map(Trigger::as_str)).into()
    }
}

impl ToSchema for Trigger {}

impl PartialSchema for RunKind {
    fn schema() -> RefOr<Schema> {
        doc::one_of_texts(RunKind::iter().map(RunKind::as_str)).into()
    }
}

impl ToSchema for RunKind {}

/// A run's status, and what `abandoned` means.
fn run_status() -> RefOr<Schema> {
    let mut schema = RunStatus::schema();
    if let RefOr::T(Schema::Object(object)) = &mut schema {
        object.description = Some(
            "abandoned: the process running it died or stopped first; the summary counts \
             what it did write."
                .to_owned(),
        );
    }
    schema
}

/// A run's kind, described. A doc comment on an inlined field made utoipa add an `object`
/// beside the text's schema (`allOf`), which no answer matches: schemathesis found it.
fn run_kind() -> RefOr<Schema> {
    let mut schema = RunKind::schema();
    if let RefOr::T(Schema::Object(object)) = &mut schema {
        object.description = Some(
            "pay: every invoice it could claim (an operator's retry: the one invoice); \
             dunning: the past-due invoices that were due (the daily run); reconcile: \
             invoices looked up at the provider, nothing charged."
                .to_owned(),
        );
    }
    schema
}

/// The status of a run that has just started.
fn running() -> Schema {
    doc::one_of_texts([RunStatus::Running.as_str()])
}

/// The status of a run that finished.
fn completed() -> Schema {
    doc::one_of_texts([RunStatus::Completed.as_str()])
}
