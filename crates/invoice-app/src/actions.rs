//! Operator actions on one invoice (scope `invoices:manage`): void it, retry it now, or
//! resolve its attention. Each is recorded in `invoice_actions` with who, when (the
//! database's clock) and why, in the transaction that changes the invoice; what each
//! action admits is [`Action::admits`].

use std::sync::Arc;

use api_contract::InvoiceId;
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::Connection;

use crate::billing::{Biller, BillingError, RetryNow};
use crate::db::actions::ActionRow;
use crate::db::{self, AnyConnection, DbError, DbPool};
use crate::domain::{Action, Invoice, Reason, Refusal, RunId};
use crate::invoices::{BAD_CURSOR, Page, ReadError, first, page_limit};

/// Why an action was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no such invoice")]
    NotFound,
    #[error("{0}")]
    Refused(Refusal),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Billing(#[from] BillingError),
    #[error("a stored row does not convert: {0}")]
    Corrupt(String),
}

impl From<ReadError> for ActionError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Db(e) => ActionError::Db(e),
            ReadError::Corrupt(e) => ActionError::Corrupt(e),
        }
    }
}

/// How a resolve settles an invoice's attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A person checked it (the provider's ledger, the credential): attention cleared, it
    /// waits for the next run again.
    Dismiss(Reason),
}

/// Voids invoice `id` for `actor`: it is never charged again.
pub async fn void(
    pool: &DbPool,
    id: InvoiceId,
    actor: String,
    reason: Reason,
) -> Result<Invoice, ActionError> {
    apply(
        pool,
        id,
        Action::Void,
        actor,
        Some(reason),
        db::invoices::void,
    )
    .await
}

/// Resolves invoice `id`'s attention for `actor` as `resolution` says.
pub async fn resolve(
    pool: &DbPool,
    id: InvoiceId,
    actor: String,
    resolution: Resolution,
) -> Result<Invoice, ActionError> {
    match resolution {
        Resolution::Dismiss(reason) => {
            apply(
                pool,
                id,
                Action::Dismiss,
                actor,
                Some(reason),
                db::invoices::dismiss,
            )
            .await
        }
    }
}

/// Charges invoice `id` now, in a pay run of its own started by `actor`; the invoice as it
/// stands after the attempt (paid, past due again, or handed back if the provider could
/// not be reached).
pub async fn retry(
    biller: &Arc<Biller>,
    pool: &DbPool,
    id: InvoiceId,
    actor: String,
    reason: Option<Reason>,
) -> Result<Invoice, ActionError> {
    let action = ActionRow::new(
        id.as_str(),
        Action::Retry,
        &actor,
        reason.as_ref().map(Reason::as_str),
        db::clock::now(),
    );
    match biller.retry_now(action).await? {
        RetryNow::Ran(_) => crate::invoices::get(pool, id)
            .await?
            .ok_or(ActionError::NotFound),
        RetryNow::Refused(refusal) => Err(ActionError::Refused(refusal)),
        RetryNow::NotFound => Err(ActionError::NotFound),
    }
}

/// Writes `action` to invoice `id` with `write` (its guarded update) and records it, in one
/// transaction; when `write` changes nothing, says why from the row as it stands.
async fn apply(
    pool: &DbPool,
    id: InvoiceId,
    action: Action,
    actor: String,
    reason: Option<Reason>,
    write: fn(&mut AnyConnection, &str, NaiveDateTime) -> diesel::QueryResult<usize>,
) -> Result<Invoice, ActionError> {
    let row = db::run(pool, move |c| {
        c.transaction::<_, diesel::result::Error, _>(|c| {
            let now = db::clock::now();
            let id = id.as_str();
            // The guarded write first: it decides, and no run can claim the row between a
            // read and the write.
            let written = write(c, id, now)? == 1;
            let Some(row) = db::invoices::find(c, id)? else {
                return Ok(Err(ActionError::NotFound));
            };
            if !written {
                // Admitted now but not a moment ago: a run settled it in between.
                let refusal = action
                    .admits(row.status, row.attention.is_some())
                    .err()
                    .unwrap_or(Refusal::Processing);
                return Ok(Err(ActionError::Refused(refusal)));
            }
            let reason = reason.as_ref().map(Reason::as_str);
            db::actions::insert(c, &ActionRow::new(id, action, &actor, reason, now))?;
            Ok(Ok(row))
        })
        .map_err(DbError::from)
    })
    .await??;
    Invoice::try_from(row).map_err(ActionError::Corrupt)
}

/// Which of an invoice's actions a page holds: validated, as the other lists are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionQuery {
    limit: u32,
    cursor: Option<String>,
}

impl ActionQuery {
    /// `limit` actions (100 when `None`) after `cursor` (the `next_cursor` of the page
    /// before).
    pub fn new(limit: Option<u32>, cursor: Option<String>) -> Result<Self, String> {
        let limit = page_limit(limit)?;
        // Action ids have the shape of every id here; anything else was never given out.
        if cursor.as_deref().is_some_and(|c| !api_contract::is_id(c)) {
            return Err(BAD_CURSOR.to_owned());
        }
        Ok(ActionQuery { limit, cursor })
    }
}

/// One operator action on an invoice, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRecord {
    pub id: String,
    pub action: Action,
    pub actor: String,
    pub reason: Option<String>,
    pub pay_run_id: Option<RunId>,
    pub created_at: DateTime<Utc>,
}

impl From<ActionRow> for ActionRecord {
    fn from(row: ActionRow) -> Self {
        ActionRecord {
            id: row.id,
            action: row.action,
            actor: row.actor,
            reason: row.reason,
            pay_run_id: row.pay_run_id,
            created_at: row.created_at.and_utc(),
        }
    }
}

/// A page of the actions on invoice `id`, oldest first; `None` when there is no such
/// invoice.
pub async fn list(
    pool: &DbPool,
    id: InvoiceId,
    query: ActionQuery,
) -> Result<Option<Page<ActionRecord>>, ReadError> {
    let ActionQuery { limit, cursor } = query;
    let rows = db::read(pool, move |c| {
        if db::invoices::find(c, id.as_str())?.is_none() {
            return Ok(None);
        }
        db::actions::page(c, id.as_str(), cursor.as_deref(), i64::from(limit) + 1).map(Some)
    })
    .await?;
    let Some(rows) = rows else {
        return Ok(None);
    };
    let (rows, more) = first(rows, limit);
    let items: Vec<ActionRecord> = rows.into_iter().map(ActionRecord::from).collect();
    let next_cursor = more.then(|| items.last().map(|a| a.id.clone())).flatten();
    Ok(Some(Page { items, next_cursor }))
}
