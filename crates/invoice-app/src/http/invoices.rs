use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, web};
use api_contract::{CustomerId, IdempotencyKey, InvoiceId, Money, headers};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use strum::IntoEnumIterator;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

use super::doc::{self, Doc};
use crate::auth::Principal;
use crate::domain::{Invoice, InvoiceStatus, NewInvoice};
use crate::error::ApiError;
use crate::http::idempotency::OptionalKey;
use crate::invoices::{self, Answer, ListQuery, Once, Page};
use crate::state::AppState;

/// An invoice as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Invoice)]
pub struct InvoiceResource {
    #[schema(value_type = String)]
    pub id: InvoiceId,
    pub customer_id: CustomerId,
    pub amount: Money,
    /// For people: "12.15 EUR". Programs use `amount`.
    #[schema(examples("12.15 EUR"))]
    pub amount_display: String,
    pub description: String,
    pub status: InvoiceStatus,
    #[schema(required = true, examples("insufficient_funds"))]
    pub failure_reason: Option<String>,
    #[schema(required = true)]
    pub charge_id: Option<String>,
    /// Why a person should look at this pending invoice: the provider refused our key or
    /// credential, or answered with a code this service does not know. The invoice stays
    /// payable; cleared when it is paid or failed.
    #[schema(
        required = true,
        examples("idempotency_key_reused: the provider holds this key with another request")
    )]
    pub attention: Option<String>,
    /// Soft declines so far (insufficient funds, try again later). A past-due invoice is
    /// tried again on the dunning schedule and is uncollectible once it runs out.
    #[schema(minimum = 0, examples(1))]
    pub attempt_count: i32,
    /// When a past-due invoice is tried next; null in every other status.
    #[schema(required = true, format = DateTime)]
    pub next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(required = true, format = DateTime)]
    pub paid_at: Option<String>,
    /// Who created it through the API: jwt:<sub>, key:<client> or dev; null when not
    /// created through the API.
    #[schema(required = true, examples("jwt:248289761001", "key:ci", "dev"))]
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
            attempt_count: i.attempt_count,
            next_attempt_at: i.next_attempt_at.map(rfc3339),
            created_at: rfc3339(i.created_at),
            paid_at: i.paid_at.map(rfc3339),
            created_by: i.created_by,
        }
    }
}

impl PartialSchema for InvoiceStatus {
    fn schema() -> RefOr<Schema> {
        doc::one_of_texts(InvoiceStatus::iter().map(InvoiceStatus::as_str)).into()
    }
}

impl ToSchema for InvoiceStatus {}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvoice {
    customer_id: CustomerId,
    #[schema(value_type = NewAmount)]
    amount: Money,
    #[schema(schema_with = description_schema)]
    description: Option<String>,
}

impl TryFrom<CreateInvoice> for NewInvoice {
    type Error = String;
    fn try_from(body: CreateInvoice) -> Result<Self, String> {
        NewInvoice::parse(body.customer_id, body.amount, body.description)
    }
}

/// The schema of `CreateInvoice.amount`: money of at least one minor unit
/// (`NewInvoice::parse` refuses zero).
enum NewAmount {}

impl PartialSchema for NewAmount {
    fn schema() -> RefOr<Schema> {
        let mut money = Money::schema();
        if let RefOr::T(Schema::Object(object)) = &mut money {
            object.description = Some(
                "Money to charge: at least one minor unit. A number with a zero fraction \
                 (1215.0) is that integer; any other fraction is refused, never rounded."
                    .to_owned(),
            );
            if let Some(RefOr::T(Schema::Object(units))) = object.properties.get_mut("minor_units")
            {
                units.minimum = Some(1.into());
            }
        }
        money
    }
}

impl ToSchema for NewAmount {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        Money::schemas(schemas);
    }
}

fn description_schema() -> Schema {
    doc::string()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .max_length(Some(NewInvoice::MAX_DESCRIPTION))
        // What `char::is_control` refuses: the C0 and C1 controls and DEL.
        .pattern(Some(r"^[^\u0000-\u001F\u007F-\u009F]*$"))
        .description(Some(
            "Free text without control characters; null or absent is the empty text.",
        ))
        .build()
        .into()
}

/// `POST /invoices`, once per `Idempotency-Key` of the client when one is sent.
pub async fn create(
    principal: Principal,
    key: OptionalKey,
    body: web::Json<CreateInvoice>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let new = NewInvoice::try_from(body.into_inner()).map_err(ApiError::InvalidRequest)?;
    let client = principal.name().to_owned();
    if let OptionalKey(Some(key)) = key {
        return Ok(
            match invoices::create_once(&state.pool, new, client, key, created).await? {
                Once::Created(answer) => respond(answer, false),
                Once::Replayed(answer) => respond(answer, true),
            },
        );
    }
    let invoice = invoices::create_as(&state.pool, vec![new], Some(client))
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

pub fn create_doc() -> Doc {
    let replayed = doc::header(
        doc::string().enum_values(Some(["true"])),
        Some("Present on a replayed answer: nothing was created."),
        false,
    );
    Doc::new("createInvoice")
        .summary("Create a pending invoice.")
        .param(
            headers::IDEMPOTENCY_KEY,
            ParameterIn::Header,
            false,
            IdempotencyKey::schema(),
            Some(
                "Makes a retry safe: the same key with the same request, from the same client \
                 (the credential's jwt:<sub>, key:<client> or dev), creates nothing and replays \
                 the first answer with Idempotent-Replayed: true; the same key with another \
                 request is a 422 (code idempotency_key_reused). Keys are kept at least 24 hours \
                 (IDEMPOTENCY_KEY_RETENTION_HOURS). 1-255 visible ASCII characters; sent once.",
            ),
        )
        .body::<CreateInvoice>()
        .answers_with::<InvoiceResource>(
            201,
            "Created; or, for a retry with the same Idempotency-Key, the first answer replayed.",
            [
                ("Location", doc::header(doc::string(), None, true)),
                (headers::IDEMPOTENT_REPLAYED, replayed),
            ],
        )
        .problem(
            400,
            "Malformed JSON (code malformed_request), or an Idempotency-Key that is not 1-255 \
             visible ASCII characters or is sent twice (code invalid_idempotency_key).",
        )
        .problem(413, "Body too large.")
        .problem(415, "Not JSON.")
        .problem(
            422,
            "Invalid invoice (code invalid_request), or an Idempotency-Key this client used \
             before with another request (code idempotency_key_reused).",
        )
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

impl TryFrom<ListParams> for ListQuery {
    type Error = String;
    fn try_from(params: ListParams) -> Result<Self, String> {
        let status = params
            .status
            .map(|s| s.parse::<InvoiceStatus>())
            .transpose()?;
        ListQuery::new(status, params.limit, params.cursor)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoicePage {
    items: Vec<InvoiceResource>,
    /// Pass as `cursor` for the next page; null on the last one.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

impl From<Page<Invoice>> for InvoicePage {
    fn from(page: Page<Invoice>) -> Self {
        InvoicePage {
            items: page.items.into_iter().map(InvoiceResource::from).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// `GET /invoices?status=&limit=&cursor=`
pub async fn list(
    params: web::Query<ListParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = ListQuery::try_from(params.into_inner()).map_err(ApiError::BadQuery)?;
    let page = invoices::list(&state.pool, query).await?;
    Ok(HttpResponse::Ok().json(InvoicePage::from(page)))
}

pub fn list_doc() -> Doc {
    let limit = doc::integer()
        .minimum(Some(1))
        .maximum(Some(ListQuery::MAX_LIMIT))
        .default(Some(ListQuery::DEFAULT_LIMIT.into()));
    Doc::new("listInvoices")
        .summary("List invoices, oldest first, a page at a time.")
        .param_of::<InvoiceStatus>("status", ParameterIn::Query, false, None)
        .param("limit", ParameterIn::Query, false, limit, None)
        .param(
            "cursor",
            ParameterIn::Query,
            false,
            InvoiceId::schema(),
            Some("next_cursor of the previous page"),
        )
        .answers::<InvoicePage>(200, "A page of invoices.")
        .problem(400, "Bad query parameter.")
}

/// `GET /invoices/{id}`
pub async fn get(
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let not_found = || ApiError::NotFound(format!("no invoice {id}"));
    // Anything but an id names nothing: answered before any query.
    let lookup = InvoiceId::parse(id.as_str()).map_err(|_| not_found())?;
    let invoice = invoices::get(&state.pool, lookup)
        .await?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(InvoiceResource::from(invoice)))
}

pub fn get_doc() -> Doc {
    Doc::new("getInvoice")
        .path_param("id")
        .answers::<InvoiceResource>(200, "The invoice.")
        .problem(404, "No such invoice.")
}
