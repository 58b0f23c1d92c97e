//! The attempts to pay an invoice, as its audit trail keeps them.

use actix_web::{HttpResponse, web};
use api_contract::InvoiceId;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use strum::IntoEnumIterator;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::Schema;

use super::doc::{self, Doc};
use crate::domain::{AttemptId, AttemptKind, AttemptOutcome, RunId, Sent, Trigger};
use crate::error::ApiError;
use crate::invoices::{self, Attempt, AttemptQuery, ListQuery, Page};
use crate::state::AppState;

/// One call to the provider for an invoice, with what started the pay run that made it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Attempt)]
pub struct AttemptResource {
    #[schema(value_type = String, examples("019b0a9e-3c41-7d52-9e1f-6a7b8c9d0e1f"))]
    id: AttemptId,
    #[schema(schema_with = kind)]
    kind: AttemptKind,
    /// When the call started (the attempt is recorded right before it).
    #[schema(format = DateTime)]
    started_at: String,
    /// When the call ended; null while it is being made.
    #[schema(required = true, format = DateTime)]
    finished_at: Option<String>,
    #[schema(schema_with = outcome)]
    outcome: AttemptOutcome,
    #[schema(required = true, schema_with = sent)]
    sent: Option<Sent>,
    /// The provider's HTTP status; null when no answer came back.
    #[schema(required = true, examples(402, 201))]
    http_status: Option<i32>,
    /// The provider's code when it declined the charge (insufficient_funds,
    /// try_again_later, customer_not_found, currency_mismatch, account_closed,
    /// invalid_request); null for every other outcome, whose reason is in `detail`.
    #[schema(required = true, examples("insufficient_funds"))]
    provider_code: Option<String>,
    /// The charge a succeeded attempt made (or found made before under its key): the
    /// invoice's `charge_id` is the one of the attempt that paid it.
    #[schema(required = true, examples("ch_019b0a9e3c417d529e1f6a7b8c9d0e1f"))]
    charge_id: Option<String>,
    /// The key the charge was sent with: `invoice-<id>` until the first soft decline, then
    /// `invoice-<id>-retry-<n>` for the n-th dunning retry. Attempts under one key are at
    /// most one charge.
    #[schema(examples("invoice-0195b4c0-7a10-7000-8000-000000000002-retry-1"))]
    idempotency_key: String,
    /// What the provider said, or why no answer came: for a decline `<code>: <detail>`.
    #[schema(
        required = true,
        examples("insufficient_funds: the account of customer C001 cannot cover the charge")
    )]
    detail: Option<String>,
    /// The pay run that made it (`GET /pay-runs/{id}`).
    #[schema(value_type = String)]
    pay_run_id: RunId,
    #[schema(required = true, schema_with = trigger)]
    trigger: Option<Trigger>,
    /// Who started its pay run through the API: jwt:<sub>, key:<client> or dev; null for
    /// the schedule and the CLI.
    #[schema(required = true, examples("jwt:248289761001", "key:ci", "dev"))]
    started_by: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<Attempt> for AttemptResource {
    fn from(a: Attempt) -> Self {
        AttemptResource {
            id: a.id,
            kind: a.kind,
            started_at: rfc3339(a.started_at),
            finished_at: a.finished_at.map(rfc3339),
            outcome: a.outcome,
            sent: a.sent,
            http_status: a.http_status,
            provider_code: a.provider_code,
            charge_id: a.charge_id,
            idempotency_key: a.idempotency_key,
            detail: a.detail,
            pay_run_id: a.pay_run_id,
            trigger: a.trigger,
            started_by: a.started_by,
        }
    }
}

/// An invoice declined for insufficient funds by the monthly run, then paid by the retry a
/// caller started.
fn page_example() -> serde_json::Value {
    let invoice = "0195b4c0-7a10-7000-8000-000000000002";
    json!({
        "items": [
            {
                "id": "019b0a9e-3c41-7d52-9e1f-6a7b8c9d0e1f",
                "kind": "charge",
                "started_at": "2026-12-01T00:00:01.250Z",
                "finished_at": "2026-12-01T00:00:01.310Z",
                "outcome": "declined",
                "sent": "yes",
                "http_status": 402,
                "provider_code": "insufficient_funds",
                "charge_id": null,
                "idempotency_key": format!("invoice-{invoice}"),
                "detail": "insufficient_funds: the account of customer C001 cannot cover the charge",
                "pay_run_id": "019b0a9e-3b80-7c11-8a2d-5e6f7a8b9c0d",
                "trigger": "schedule",
                "started_by": null
            },
            {
                "id": "019b1e5a-0f12-7a34-b5c6-d7e8f9a0b1c2",
                "kind": "charge",
                "started_at": "2026-12-04T09:30:00.120Z",
                "finished_at": "2026-12-04T09:30:00.180Z",
                "outcome": "succeeded",
                "sent": "yes",
                "http_status": 201,
                "provider_code": null,
                "charge_id": "ch_019b1e5a0f2a7b11a2b3c4d5e6f7a8b9",
                "idempotency_key": format!("invoice-{invoice}-retry-1"),
                "detail": null,
                "pay_run_id": "019b1e5a-0e90-7f00-9a1b-2c3d4e5f6a7b",
                "trigger": "api",
                "started_by": "jwt:248289761001"
            }
        ],
        "next_cursor": null
    })
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(page_example))]
pub struct AttemptPage {
    /// Oldest first.
    items: Vec<AttemptResource>,
    /// Pass as `cursor` for the next page; null on the last one.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

impl From<Page<Attempt>> for AttemptPage {
    fn from(page: Page<Attempt>) -> Self {
        AttemptPage {
            items: page.items.into_iter().map(AttemptResource::from).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct AttemptParams {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /invoices/{id}/attempts?limit=&cursor=`
pub async fn list(
    id: web::Path<String>,
    params: web::Query<AttemptParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let not_found = || ApiError::NotFound(format!("no invoice {id}"));
    let AttemptParams { limit, cursor } = params.into_inner();
    let query = AttemptQuery::new(limit, cursor).map_err(ApiError::BadQuery)?;
    // Anything but an id names nothing: answered before any query.
    let invoice = InvoiceId::parse(id.as_str()).map_err(|_| not_found())?;
    let page = invoices::attempts(&state.pool, invoice, query)
        .await?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(AttemptPage::from(page)))
}

pub fn list_doc() -> Doc {
    let limit = doc::integer()
        .minimum(Some(1))
        .maximum(Some(ListQuery::MAX_LIMIT))
        .default(Some(ListQuery::DEFAULT_LIMIT.into()));
    Doc::new("listInvoiceAttempts")
        .summary("List the attempts to pay an invoice, oldest first, a page at a time.")
        .path_param("id")
        .param("limit", ParameterIn::Query, false, limit, None)
        .param(
            "cursor",
            ParameterIn::Query,
            false,
            // The shape of every id here (api_contract::is_id).
            doc::string().pattern(Some("^[A-Za-z0-9_-]{1,64}$")),
            Some("next_cursor of the previous page"),
        )
        .answers::<AttemptPage>(
            200,
            "A page of the invoice's attempts; empty for one never tried.",
        )
        .problem(400, "Bad query parameter.")
        .problem(404, "No such invoice.")
}

/// The outcome classes, and what each means for the invoice.
fn outcome() -> RefOr<Schema> {
    described(
        doc::one_of_texts(AttemptOutcome::iter().map(AttemptOutcome::as_str)),
        "started: the call is being made. interrupted: its process stopped during the call; \
         the next call with the same key tells whether it was charged. succeeded: charged. \
         declined: refused by the provider (provider_code says why). retryable: not done \
         (unreachable, busy, 5xx); tried again. unknown: it may have been charged (a timeout, \
         a lost connection); tried again under the same key. attention: an answer a person \
         must look at.",
    )
}

fn sent() -> RefOr<Schema> {
    described(
        nullable(Sent::iter().map(Sent::as_str)),
        "Whether the request left: yes (an answer came back), no (refused before anything \
         was sent), unknown (a timeout or lost connection: it may have arrived); null while \
         the call is being made.",
    )
}

fn kind() -> RefOr<Schema> {
    described(
        doc::one_of_texts(AttemptKind::iter().map(AttemptKind::as_str)),
        "charge: the charge sent under the invoice's key; lookup: a read of what the \
         provider holds under that key (reconciliation), which charges nothing.",
    )
}

fn trigger() -> RefOr<Schema> {
    described(
        nullable(Trigger::iter().map(Trigger::as_str)),
        "What started the attempt's pay run: api (POST /invoices/pay, POST /pay-runs), \
         schedule (the in-process schedule) or cli (invoice-app pay, the CronJob); null only \
         when the run's record is missing.",
    )
}

/// Text that is one of `values`, or null.
fn nullable(values: impl Iterator<Item = &'static str>) -> Schema {
    use utoipa::openapi::schema::{SchemaType, Type};
    doc::string()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some(values.map(Some).chain([None])))
        .build()
        .into()
}

fn described(schema: Schema, description: &str) -> RefOr<Schema> {
    let mut schema = RefOr::T(schema);
    if let RefOr::T(Schema::Object(object)) = &mut schema {
        object.description = Some(description.to_owned());
    }
    schema
}
