use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, web};
use api_contract::{CustomerId, InvoiceId, Money, headers};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::db;
use crate::domain::{Invoice, InvoiceStatus, NewInvoice};
use crate::error::ApiError;
use crate::http::idempotency::OptionalKey;
use crate::invoices::{self, Answer, Once};
use crate::state::AppState;

/// An invoice as the API shows it.
#[derive(Debug, Serialize)]
pub struct InvoiceResource {
    pub id: InvoiceId,
    pub customer_id: CustomerId,
    pub amount: Money,
    /// For people: "12.15 EUR". Programs use `amount`.
    pub amount_display: String,
    pub description: String,
    pub status: InvoiceStatus,
    pub failure_reason: Option<String>,
    pub charge_id: Option<String>,
    pub attention: Option<String>,
    pub created_at: String,
    pub paid_at: Option<String>,
    /// Who created it through the API: `jwt:<sub>`, `key:<client>` or `dev`.
    pub created_by: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<Invoice> for InvoiceResource {
    fn from(i: Invoice) -> Self {
        InvoiceResource {
            amount_display: i.amount.to_string(),
            id: i.id,
            customer_id: i.customer_id,
            amount: i.amount,
            description: i.description,
            status: i.status,
            failure_reason: i.failure_reason,
            charge_id: i.charge_id,
            attention: i.attention,
            created_at: rfc3339(i.created_at),
            paid_at: i.paid_at.map(rfc3339),
            created_by: i.created_by,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateInvoice {
    customer_id: CustomerId,
    amount: Money,
    description: Option<String>,
}

/// `POST /invoices`, once per `Idempotency-Key` of the client when one is sent.
pub async fn create(
    principal: Principal,
    key: OptionalKey,
    body: web::Json<CreateInvoice>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new = NewInvoice::parse(body.customer_id, body.amount, body.description)
        .map_err(ApiError::InvalidRequest)?;
    if let OptionalKey(Some(key)) = key {
        let client = principal.name().to_owned();
        return Ok(
            match invoices::create_once(&state.pool, new, client, key, created).await? {
                Once::Created(answer) => respond(answer, false),
                Once::Replayed(answer) => respond(answer, true),
            },
        );
    }
    let invoice = invoices::create_as(&state.pool, vec![new], Some(principal.name().to_owned()))
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("created invoice missing")))?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/invoices/{}", invoice.id)))
        .json(InvoiceResource::from(invoice)))
}

/// The answer to a create: 201, where the invoice is, and the invoice.
fn created(invoice: Invoice) -> Answer {
    let location = format!("/invoices/{}", invoice.id);
    Answer {
        status: 201,
        location: Some(location),
        // Plain data: serialising it cannot fail.
        body: serde_json::to_string(&InvoiceResource::from(invoice)).unwrap_or_default(),
    }
}

/// An answer, first or stored (`replayed`, flagged as the provider flags its replays).
fn respond(answer: Answer, replayed: bool) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    if let Some(location) = answer.location {
        response.insert_header((header::LOCATION, location));
    }
    if replayed {
        response.insert_header((headers::IDEMPOTENT_REPLAYED, "true"));
    }
    response.content_type("application/json").body(answer.body)
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct Page {
    items: Vec<InvoiceResource>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

const MAX_LIMIT: u32 = 1000;

/// `GET /invoices?status=&limit=&cursor=`
pub async fn list(
    params: web::Query<ListParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let status = params
        .status
        .map(|s| s.parse::<InvoiceStatus>())
        .transpose()
        .map_err(ApiError::BadQuery)?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadQuery(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let cursor = params.cursor;
    if cursor.as_ref().is_some_and(|c| !api_contract::is_id(c)) {
        return Err(ApiError::BadQuery(
            "cursor is not one this API gave out".to_owned(),
        ));
    }
    let rows = db::read(&state.pool, move |c| {
        db::invoices::list(c, status, cursor.as_deref(), i64::from(limit) + 1)
    })
    .await?;
    let more = rows.len() > limit as usize;
    let items = rows
        .into_iter()
        .take(limit as usize)
        .map(|row| Invoice::try_from(row).map(InvoiceResource::from))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    let next_cursor = if more {
        items.last().map(|i| i.id.to_string())
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(Page { items, next_cursor }))
}

/// `GET /invoices/{id}`
pub async fn get(
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let not_found = || ApiError::NotFound(format!("no invoice {id}"));
    if !api_contract::is_id(&id) {
        return Err(not_found());
    }
    let lookup = id.clone();
    let row = db::read(&state.pool, move |c| db::invoices::find(c, &lookup))
        .await?
        .ok_or_else(not_found)?;
    let invoice = Invoice::try_from(row).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    Ok(HttpResponse::Ok().json(InvoiceResource::from(invoice)))
}
