//! Operator actions on one invoice (scope `invoices:manage`), and the record of them.

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use api_contract::InvoiceId;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strum::IntoEnumIterator;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::{Schema, SchemaType, Type};

use super::doc::{self, Doc};
use super::invoices::InvoiceResource;
use crate::actions::{self, ActionQuery, ActionRecord, Resolution};
use crate::auth::Principal;
use crate::domain::{Action, Reason, RunId};
use crate::error::ApiError;
use crate::invoices::{ListQuery, Page};
use crate::state::AppState;

/// What a void takes: why.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidInvoice {
    /// Why it is voided, for the audit trail.
    #[schema(schema_with = reason_schema)]
    reason: String,
}

/// What a retry takes, all of it optional (the body may be left out).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryInvoice {
    /// Why it is retried now, for the audit trail.
    #[schema(schema_with = optional_reason_schema)]
    reason: Option<String>,
}

/// `POST /invoices/{id}/resolve`: what a person decided about an invoice that needs
/// attention, and why.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveInvoice {
    #[schema(schema_with = resolve_action_schema)]
    action: ResolveAction,
    /// Why, for the audit trail: what the person checked and found.
    #[schema(schema_with = reason_schema)]
    reason: String,
}

/// The actions a resolve may name. `reconcile` is a word of the API this release does not
/// act on yet: a 422 that says so, never a 400 as if it were a typo.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ResolveAction {
    Dismiss,
    Reconcile,
}

/// Only what this release does: a body the document calls valid is one it accepts.
fn resolve_action_schema() -> RefOr<Schema> {
    let mut schema = RefOr::T(doc::one_of_texts(["dismiss"]));
    if let RefOr::T(Schema::Object(object)) = &mut schema {
        object.description = Some(
            "dismiss: a person checked it (the provider's ledger, the credential); its \
             attention is cleared and the next run tries it again. A later release adds \
             reconcile (look the invoice's key up at the provider now); this one answers it \
             with 422, code action_not_available."
                .to_owned(),
        );
    }
    schema
}

impl TryFrom<ResolveInvoice> for Resolution {
    type Error = ApiError;
    fn try_from(body: ResolveInvoice) -> Result<Self, ApiError> {
        match body.action {
            ResolveAction::Dismiss => Ok(Resolution::Dismiss(
                Reason::parse(body.reason).map_err(ApiError::InvalidRequest)?,
            )),
            ResolveAction::Reconcile => Err(ApiError::NotAvailable(
                "action reconcile is not available yet: check the provider's ledger and \
                 dismiss, or wait for the daily reconciliation"
                    .to_owned(),
            )),
        }
    }
}

/// What a reason may be (as [`Reason::parse`] checks it): 1-500 characters, not only
/// blanks, no control characters.
fn reason_schema() -> Schema {
    reason_builder().build().into()
}

fn optional_reason_schema() -> Schema {
    reason_builder()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .build()
        .into()
}

fn reason_builder() -> utoipa::openapi::schema::ObjectBuilder {
    doc::string()
        .min_length(Some(1))
        .max_length(Some(Reason::MAX))
        // No C0/C1 control or DEL anywhere (`char::is_control`), and one character that
        // is not a blank (`str::trim`).
        .pattern(Some(
            r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
        ))
        .examples(["the customer cancelled the order (ticket 4711)"])
}

/// The invoice `id` names, or a 404 before any query.
fn invoice_id(id: &str) -> Result<InvoiceId, ApiError> {
    InvoiceId::parse(id).map_err(|_| ApiError::NotFound(format!("no invoice {id}")))
}

/// `POST /invoices/{id}/void`
pub async fn void(
    principal: Principal,
    id: web::Path<String>,
    body: web::Json<VoidInvoice>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = invoice_id(&id)?;
    let reason = Reason::parse(body.into_inner().reason).map_err(ApiError::InvalidRequest)?;
    let invoice = actions::void(&state.pool, id, principal.name().to_owned(), reason).await?;
    Ok(HttpResponse::Ok().json(InvoiceResource::from(invoice)))
}

/// `POST /invoices/{id}/retry`, with or without a body.
pub async fn retry(
    principal: Principal,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = invoice_id(&id)?;
    let body: RetryInvoice = optional_json(&req, body).await?.unwrap_or_default();
    let reason = body
        .reason
        .map(Reason::parse)
        .transpose()
        .map_err(ApiError::InvalidRequest)?;
    let invoice = actions::retry(
        &state.biller,
        &state.pool,
        id,
        principal.name().to_owned(),
        reason,
    )
    .await?;
    Ok(HttpResponse::Ok().json(InvoiceResource::from(invoice)))
}

/// `POST /invoices/{id}/resolve`
pub async fn resolve(
    principal: Principal,
    id: web::Path<String>,
    body: web::Json<ResolveInvoice>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = invoice_id(&id)?;
    let resolution = Resolution::try_from(body.into_inner())?;
    let invoice =
        actions::resolve(&state.pool, id, principal.name().to_owned(), resolution).await?;
    Ok(HttpResponse::Ok().json(InvoiceResource::from(invoice)))
}

/// A JSON body that may be left out (no bytes): read as `web::Json` reads one, with the
/// same answers for a body too large (413), of another media type (415), malformed (400)
/// or with the wrong fields (422).
async fn optional_json<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Option<T>, ApiError> {
    let body = payload
        .to_bytes_limited(super::JSON_LIMIT)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?
        .map_err(|e| ApiError::MalformedRequest(e.to_string()))?;
    if body.is_empty() {
        return Ok(None);
    }
    let json = req
        .mime_type()
        .ok()
        .flatten()
        .is_some_and(|m| m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"));
    if !json {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(&body).map(Some).map_err(|e| {
        if e.is_data() {
            ApiError::InvalidRequest(e.to_string())
        } else {
            ApiError::MalformedRequest(e.to_string())
        }
    })
}

/// What every action answers besides its invoice.
fn refusals(doc: Doc) -> Doc {
    doc.answers::<InvoiceResource>(200, "The invoice as it now stands.")
        .problem(400, "Malformed JSON (code malformed_request).")
        .problem(404, "No such invoice.")
        .problem(
            409,
            "The invoice does not admit the action as it stands: a pay run is charging it \
             (code invoice_processing; try again once it is settled), or it is paid, failed, \
             uncollectible or void (code invoice_settled).",
        )
        .problem(413, "Body too large.")
        .problem(415, "Not JSON.")
}

pub fn void_doc() -> Doc {
    refusals(
        Doc::new("voidInvoice")
            .summary(
                "Void a pending or past-due invoice: it is never charged again. Recorded with \
                 who, when and why.",
            )
            .path_param("id")
            .body::<VoidInvoice>(),
    )
    .problem(
        422,
        "No reason, or one that is too long or holds control characters (code invalid_request).",
    )
}

pub fn retry_doc() -> Doc {
    refusals(
        Doc::new("retryInvoice")
            .summary(
                "Charge a pending or past-due invoice now, in a pay run of its own (its key is \
                 the one a dunning retry would use), and answer the invoice as it stands \
                 after the attempt: paid, past due again, or handed back when the provider \
                 could not be reached. Recorded with who, when and why.",
            )
            .path_param("id")
            .optional_body::<RetryInvoice>(),
    )
    .problem(
        409,
        "The invoice does not admit a retry as it stands: a pay run is charging it (code \
         invoice_processing; try again once it is settled), it is paid, failed, uncollectible \
         or void (code invoice_settled), or it needs attention (code \
         invoice_needs_attention; resolve it first).",
    )
    .problem(
        422,
        "A reason that is empty, too long or holds control characters (code invalid_request).",
    )
    .problem_with(
        429,
        "PAY_MAX_RUNS runs are in progress in this process already. Retry after the \
         Retry-After seconds.",
        [("Retry-After", doc::header(doc::integer(), None, false))],
    )
    .problem(
        503,
        "Database unavailable or shutting down, or the token issuer's keys cannot be fetched \
         yet.",
    )
}

pub fn resolve_doc() -> Doc {
    refusals(
        Doc::new("resolveInvoice")
            .summary(
                "Resolve an invoice that needs attention once a person has checked it \
                 (action dismiss): its attention is cleared and the next run tries it again. \
                 Until then no run calls it. Recorded with who, when and why.",
            )
            .path_param("id")
            .body::<ResolveInvoice>(),
    )
    .problem(
        409,
        "The invoice does not admit a resolve as it stands: it needs no attention (code \
         nothing_to_resolve), a pay run is charging it (code invoice_processing), or it is \
         paid, failed, uncollectible or void (code invoice_settled).",
    )
    .problem(
        422,
        "An unknown action or no reason (code invalid_request), or action reconcile, which \
         this release does not offer yet (code action_not_available).",
    )
}

/// One operator action on an invoice, as the audit trail keeps it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = InvoiceAction)]
pub struct ActionResource {
    #[schema(examples("019b2c4d-5e6f-7a80-9b1c-2d3e4f5a6b7c"))]
    id: String,
    #[schema(schema_with = action_schema)]
    action: Action,
    /// Who: jwt:<sub>, key:<client> or dev.
    #[schema(examples("jwt:248289761001", "key:ops", "dev"))]
    actor: String,
    /// Why, as they said; null for a retry without one.
    #[schema(
        required = true,
        examples("the customer cancelled the order (ticket 4711)")
    )]
    reason: Option<String>,
    /// The pay run a retry started (`GET /pay-runs/{id}`); null for the other actions.
    #[schema(required = true, value_type = Option<String>)]
    pay_run_id: Option<RunId>,
    /// When, by the database's clock.
    #[schema(format = DateTime)]
    created_at: String,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<ActionRecord> for ActionResource {
    fn from(a: ActionRecord) -> Self {
        ActionResource {
            id: a.id,
            action: a.action,
            actor: a.actor,
            reason: a.reason,
            pay_run_id: a.pay_run_id,
            created_at: rfc3339(a.created_at),
        }
    }
}

fn action_schema() -> RefOr<Schema> {
    let mut schema = RefOr::T(doc::one_of_texts(Action::iter().map(Action::as_str)));
    if let RefOr::T(Schema::Object(object)) = &mut schema {
        object.description = Some(
            "void: voided, never charged again. retry: charged now in a run of its own \
             (pay_run_id). dismiss: its attention cleared after a person checked it."
                .to_owned(),
        );
    }
    schema
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = InvoiceActionPage)]
pub struct ActionPage {
    /// Oldest first.
    items: Vec<ActionResource>,
    /// Pass as `cursor` for the next page; null on the last one.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

impl From<Page<ActionRecord>> for ActionPage {
    fn from(page: Page<ActionRecord>) -> Self {
        ActionPage {
            items: page.items.into_iter().map(ActionResource::from).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ActionParams {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /invoices/{id}/actions?limit=&cursor=`
pub async fn list(
    id: web::Path<String>,
    params: web::Query<ActionParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ActionParams { limit, cursor } = params.into_inner();
    let query = ActionQuery::new(limit, cursor).map_err(ApiError::BadQuery)?;
    let invoice = invoice_id(&id)?;
    let page = actions::list(&state.pool, invoice, query)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no invoice {id}")))?;
    Ok(HttpResponse::Ok().json(ActionPage::from(page)))
}

pub fn list_doc() -> Doc {
    let limit = doc::integer()
        .minimum(Some(1))
        .maximum(Some(ListQuery::MAX_LIMIT))
        .default(Some(ListQuery::DEFAULT_LIMIT.into()));
    Doc::new("listInvoiceActions")
        .summary("List what operators did to an invoice (void, retry, dismiss), oldest first.")
        .path_param("id")
        .param("limit", ParameterIn::Query, false, limit, None)
        .param(
            "cursor",
            ParameterIn::Query,
            false,
            doc::string().pattern(Some("^[A-Za-z0-9_-]{1,64}$")),
            Some("next_cursor of the previous page"),
        )
        .answers::<ActionPage>(
            200,
            "A page of the invoice's actions; empty for one never acted on.",
        )
        .problem(400, "Bad query parameter.")
        .problem(404, "No such invoice.")
}
