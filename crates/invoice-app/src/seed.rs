//! Demo data: pending invoices for payment-provider's demo customers, written only into an
//! empty table so restarts don't add more.

use api_contract::{CustomerId, DEMO_CUSTOMERS, Money};

use crate::db::{self, DbError, DbPool};
use crate::domain::NewInvoice;

const DEMO_INVOICES: usize = 36;

pub fn demo_invoices() -> Vec<NewInvoice> {
    (0..DEMO_INVOICES)
        .filter_map(|i| {
            let (customer, currency) = DEMO_CUSTOMERS[i % DEMO_CUSTOMERS.len()];
            // Varied, deterministic amounts between 5.00 and 254.99 (or yen).
            let minor = 500 + (i as i64 * 7919) % 25_000;
            let amount = Money::new(minor, currency).ok()?;
            let month = 1 + i % 12;
            NewInvoice::parse(
                CustomerId::parse(customer).ok()?,
                amount,
                Some(format!("Subscription, month {month}")),
            )
            .ok()
        })
        .collect()
}

/// Seeds the demo invoices if there are no invoices at all; returns how many were created.
pub async fn apply_demo(pool: &DbPool) -> Result<usize, DbError> {
    let existing = db::run(pool, db::invoices::count).await?;
    if existing > 0 {
        return Ok(0);
    }
    Ok(crate::invoices::create(pool, demo_invoices()).await?.len())
}
