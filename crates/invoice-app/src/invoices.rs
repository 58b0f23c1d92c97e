//! Invoices as the API and the seed see them: reading one or a page of them, or a page of
//! the attempts to pay one, and creating them (validated `NewInvoice`s become pending rows
//! with time-ordered ids; with an `Idempotency-Key`, once per client and key, a retry
//! getting the first answer).

use std::time::Duration;

use api_contract::{IdempotencyKey, InvoiceId};
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};

use crate::db::attempts::AttemptWithRun;
use crate::db::idempotency_keys::{self, KeyRow};
use crate::db::{self, DbError, DbPool, invoices::InvoiceRow};
use crate::domain::{
    AttemptId, AttemptKind, AttemptOutcome, Invoice, InvoiceStatus, NewInvoice, RunId, Sent,
    Trigger,
};

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// A stored row that no longer converts (a value this version does not know).
    #[error("a stored row does not convert: {0}")]
    Corrupt(String),
}

/// Which invoices a page holds: validated, so a query never sees a bad limit or cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    status: Option<InvoiceStatus>,
    limit: u32,
    cursor: Option<InvoiceId>,
}

impl ListQuery {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;

    /// Invoices in `status` (any when `None`), `limit` of them (100 when `None`), after
    /// `cursor` (the `next_cursor` of the page before).
    pub fn new(
        status: Option<InvoiceStatus>,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<Self, String> {
        let limit = page_limit(limit)?;
        let cursor = cursor
            .map(InvoiceId::parse)
            .transpose()
            .map_err(|_| BAD_CURSOR.to_owned())?;
        Ok(ListQuery {
            status,
            limit,
            cursor,
        })
    }
}

pub(crate) const BAD_CURSOR: &str = "cursor is not one this API gave out";

/// A page's size: `limit`, or 100 when `None`; every list of the API takes the same.
pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32, String> {
    let limit = limit.unwrap_or(ListQuery::DEFAULT_LIMIT);
    if !(1..=ListQuery::MAX_LIMIT).contains(&limit) {
        return Err(format!(
            "limit must be between 1 and {}",
            ListQuery::MAX_LIMIT
        ));
    }
    Ok(limit)
}

/// One page of a list, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The cursor of the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// The first `limit` of `rows`, read as `limit + 1` of them, and whether there were more.
pub(crate) fn first<T>(mut rows: Vec<T>, limit: u32) -> (Vec<T>, bool) {
    let page = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > page;
    rows.truncate(page);
    (rows, more)
}

/// A page of invoices in id order (ids are time-ordered), after the query's cursor.
pub async fn list(pool: &DbPool, query: ListQuery) -> Result<Page<Invoice>, ReadError> {
    let ListQuery {
        status,
        limit,
        cursor,
    } = query;
    let rows = db::read(pool, move |c| {
        let cursor = cursor.as_ref().map(InvoiceId::as_str);
        db::invoices::list(c, status, cursor, i64::from(limit) + 1)
    })
    .await?;
    let (rows, more) = first(rows, limit);
    let items = rows
        .into_iter()
        .map(Invoice::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(ReadError::Corrupt)?;
    let next_cursor = more
        .then(|| items.last().map(|i| i.id.to_string()))
        .flatten();
    Ok(Page { items, next_cursor })
}

/// The invoice `id`, if there is one.
pub async fn get(pool: &DbPool, id: InvoiceId) -> Result<Option<Invoice>, ReadError> {
    let row = db::read(pool, move |c| db::invoices::find(c, id.as_str())).await?;
    row.map(Invoice::try_from)
        .transpose()
        .map_err(ReadError::Corrupt)
}

/// Which of an invoice's attempts a page holds: validated as [`ListQuery`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptQuery {
    limit: u32,
    cursor: Option<AttemptId>,
}

impl AttemptQuery {
    /// `limit` attempts (100 when `None`) after `cursor` (the `next_cursor` of the page
    /// before).
    pub fn new(limit: Option<u32>, cursor: Option<String>) -> Result<Self, String> {
        let limit = page_limit(limit)?;
        // Attempt ids have the shape of every id here; anything else was never given out.
        let cursor = match cursor {
            Some(c) if !api_contract::is_id(&c) => return Err(BAD_CURSOR.to_owned()),
            c => c.map(AttemptId::from),
        };
        Ok(AttemptQuery { limit, cursor })
    }
}

/// One call to the provider for an invoice, as its record keeps it, with what started the
/// pay run that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: AttemptId,
    pub kind: AttemptKind,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: AttemptOutcome,
    pub sent: Option<Sent>,
    pub http_status: Option<i32>,
    /// The code the provider declined it with; `None` for any other outcome.
    pub provider_code: Option<String>,
    pub charge_id: Option<String>,
    pub idempotency_key: String,
    pub detail: Option<String>,
    pub pay_run_id: RunId,
    /// `None` only when the run's row is missing.
    pub trigger: Option<Trigger>,
    /// Who started the run through the API.
    pub started_by: Option<String>,
}

impl From<AttemptWithRun> for Attempt {
    fn from((row, trigger, started_by): AttemptWithRun) -> Self {
        Attempt {
            id: row.id,
            kind: row.kind,
            started_at: row.started_at.and_utc(),
            finished_at: row.finished_at.map(|t| t.and_utc()),
            outcome: row.outcome,
            sent: row.sent,
            http_status: row.http_status,
            provider_code: row.provider_code,
            charge_id: row.charge_id,
            idempotency_key: row.idempotency_key,
            detail: row.detail,
            pay_run_id: row.pay_run_id,
            trigger,
            started_by,
        }
    }
}

/// A page of the attempts on invoice `id`, oldest first, after the query's cursor; `None`
/// when there is no such invoice (an invoice never tried has an empty page).
pub async fn attempts(
    pool: &DbPool,
    id: InvoiceId,
    query: AttemptQuery,
) -> Result<Option<Page<Attempt>>, ReadError> {
    let AttemptQuery { limit, cursor } = query;
    let rows = db::read(pool, move |c| {
        if db::invoices::find(c, id.as_str())?.is_none() {
            return Ok(None);
        }
        let cursor = cursor.as_ref().map(AttemptId::as_str);
        db::attempts::page(c, id.as_str(), cursor, i64::from(limit) + 1).map(Some)
    })
    .await?;
    let Some(rows) = rows else {
        return Ok(None);
    };
    let (rows, more) = first(rows, limit);
    let items: Vec<Attempt> = rows.into_iter().map(Attempt::from).collect();
    let next_cursor = more
        .then(|| items.last().map(|a| a.id.to_string()))
        .flatten();
    Ok(Some(Page { items, next_cursor }))
}

pub async fn create(pool: &DbPool, new: Vec<NewInvoice>) -> Result<Vec<Invoice>, DbError> {
    create_as(pool, new, None).await
}

/// As [`create`], recording who asked for them (the audit trail).
pub async fn create_as(
    pool: &DbPool,
    new: Vec<NewInvoice>,
    created_by: Option<String>,
) -> Result<Vec<Invoice>, DbError> {
    let now = db::clock::now();
    let rows: Vec<InvoiceRow> = new
        .into_iter()
        .map(|n| pending_row(n, created_by.clone(), now))
        .collect();
    let stored = rows.clone();
    db::run(pool, move |c| db::invoices::insert(c, &stored)).await?;
    // The rows were built from validated values, so they convert back.
    Ok(rows
        .into_iter()
        .filter_map(|r| Invoice::try_from(r).ok())
        .collect())
}

fn pending_row(n: NewInvoice, created_by: Option<String>, now: NaiveDateTime) -> InvoiceRow {
    InvoiceRow {
        id: uuid::Uuid::now_v7().to_string(),
        customer_id: n.customer_id.to_string(),
        amount_minor: n.amount.minor_units(),
        currency: n.amount.currency().code().to_owned(),
        description: n.description,
        status: InvoiceStatus::Pending,
        failure_reason: None,
        charge_id: None,
        claimed_by: None,
        lease_until: None,
        last_run_id: None,
        created_at: now,
        updated_at: now,
        paid_at: None,
        attention: None,
        created_by,
        attempt_count: 0,
        past_due_since: None,
        next_attempt_at: None,
    }
}

/// An answer as it is given, stored with its key to be given again to a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    /// The JSON body.
    pub body: String,
}

/// What a keyed create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Once {
    /// The invoice was created now; this is the first answer.
    Created(Answer),
    /// The client used the key before with the same request: its first answer, and nothing
    /// created.
    Replayed(Answer),
}

#[derive(Debug, thiserror::Error)]
pub enum OnceError {
    /// The client used the key before with another request.
    #[error("the Idempotency-Key was used before with another request")]
    KeyReused,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("a new invoice does not convert back: {0}")]
    Corrupt(String),
}

/// How many times a key that vanished under us (pruned between a conflict and the read) is
/// tried again before giving up.
const KEY_TRIES: usize = 3;

/// Creates the invoice unless `client` used `key` before: then the first answer is replayed
/// when the request was the same (by [`NewInvoice::fingerprint`]), and refused when not.
/// The invoice and its key are written in one transaction, so of concurrent requests with
/// one key exactly one creates it and the others (a unique violation) replay its answer.
/// `answer` renders the answer to store and give.
pub async fn create_once(
    pool: &DbPool,
    new: NewInvoice,
    client: String,
    key: IdempotencyKey,
    answer: impl FnOnce(Invoice) -> Answer,
) -> Result<Once, OnceError> {
    let now = db::clock::now();
    let request_hash = new.fingerprint();
    let row = pending_row(new, Some(client.clone()), now);
    let first = answer(Invoice::try_from(row.clone()).map_err(OnceError::Corrupt)?);
    let key_row = KeyRow {
        client,
        idempotency_key: key.as_str().to_owned(),
        request_hash: request_hash.clone(),
        response_status: i32::from(first.status),
        response_location: first.location.clone(),
        response_body: first.body.clone(),
        created_at: now,
    };
    let stored = db::run(pool, move |c| {
        for _ in 0..KEY_TRIES {
            // Read first: a retry finds its key without writing anything.
            let (client, key) = (&key_row.client, &key_row.idempotency_key);
            if let Some(stored) = idempotency_keys::find(c, client, key)? {
                return Ok(Some(stored));
            }
            let written = idempotency_keys::insert_with(c, &key_row, |t| {
                db::invoices::insert(t, std::slice::from_ref(&row))
            });
            match written {
                Ok(_) => return Ok(None),
                // Another request with the key committed first: answer as it did.
                Err(e) if db::is_unique_violation(&e) => {}
                Err(e) => return Err(DbError::from(e)),
            }
        }
        Err(DbError::Unavailable(format!(
            "Idempotency-Key conflicted {KEY_TRIES} times without a stored answer"
        )))
    })
    .await?;
    let Some(stored) = stored else {
        return Ok(Once::Created(first));
    };
    if stored.request_hash != request_hash {
        return Err(OnceError::KeyReused);
    }
    Ok(Once::Replayed(Answer {
        status: u16::try_from(stored.response_status).unwrap_or(500),
        location: stored.response_location,
        body: stored.response_body,
    }))
}

/// Keys deleted per statement, and statements per call: a call deletes at most about
/// 20,000 keys, each statement briefly.
const PRUNE_BATCH: i64 = 1_000;
const PRUNE_BATCHES: usize = 20;

/// Deletes idempotency keys older than `retention`, in bounded batches (housekeeping calls
/// it every minute or so). Returns how many went.
pub async fn prune_idempotency_keys(pool: &DbPool, retention: Duration) -> Result<usize, DbError> {
    let Some(before) = TimeDelta::from_std(retention)
        .ok()
        .and_then(|r| db::clock::now().checked_sub_signed(r))
    else {
        return Ok(0);
    };
    let mut pruned = 0;
    for _ in 0..PRUNE_BATCHES {
        let n = db::run(pool, move |c| {
            idempotency_keys::prune(c, before, PRUNE_BATCH)
        })
        .await?;
        pruned += n;
        if n < usize::try_from(PRUNE_BATCH).unwrap_or(usize::MAX) {
            break;
        }
    }
    Ok(pruned)
}
