//! Creating invoices: validated `NewInvoice`s become pending rows with time-ordered ids.

use chrono::Utc;

use crate::db::{self, DbError, DbPool, invoices::InvoiceRow};
use crate::domain::{Invoice, InvoiceStatus, NewInvoice};

pub async fn create(pool: &DbPool, new: Vec<NewInvoice>) -> Result<Vec<Invoice>, DbError> {
    create_as(pool, new, None).await
}

/// As [`create`], recording who asked for them (the audit trail).
pub async fn create_as(
    pool: &DbPool,
    new: Vec<NewInvoice>,
    created_by: Option<String>,
) -> Result<Vec<Invoice>, DbError> {
    let now = Utc::now().naive_utc();
    let rows: Vec<InvoiceRow> = new
        .into_iter()
        .map(|n| InvoiceRow {
            id: uuid::Uuid::now_v7().to_string(),
            customer_id: n.customer_id.to_string(),
            amount_minor: n.amount.minor_units(),
            currency: n.amount.currency().code().to_owned(),
            description: n.description,
            status: InvoiceStatus::Pending.as_str().to_owned(),
            failure_reason: None,
            charge_id: None,
            claimed_by: None,
            lease_until: None,
            last_run_id: None,
            created_at: now,
            updated_at: now,
            paid_at: None,
            attention: None,
            created_by: created_by.clone(),
        })
        .collect();
    let stored = rows.clone();
    db::run(pool, move |c| {
        db::invoices::insert(c, &stored).map_err(DbError::from)
    })
    .await?;
    // The rows were built from validated values, so they convert back.
    Ok(rows
        .into_iter()
        .filter_map(|r| Invoice::try_from(r).ok())
        .collect())
}
