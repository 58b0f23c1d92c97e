//! Recording what a group of charged invoices came to: their last attempts, their new
//! status, and the run's counts, in one transaction, so a run's counts are exactly the rows
//! it changed, even if the process dies right after.

use std::collections::HashSet;

use chrono::{NaiveDateTime, Utc};
use diesel::Connection;

use super::pay_one::Charged;
use super::{Biller, BillingError};
use crate::db::{self, AnyConnection, DbError, attempts, invoices, pay_runs};
use crate::domain::{Invoice, InvoiceStatus, Settlement};

impl Biller {
    /// Settles `batch` for `run_id` and returns the invoices whose rows this run changed, as
    /// they now stand. An invoice another worker holds by now is left as it is (but a
    /// payment is recorded whoever holds it: the provider's answer is the truth, and the
    /// holder's replay of the same key will find it paid). A crash before the commit loses
    /// nothing: the claims lapse and the next call with the same key is replayed.
    pub(super) async fn settle(
        &self,
        run_id: &str,
        batch: Vec<Charged>,
    ) -> Result<Vec<(Invoice, Settlement)>, BillingError> {
        let worker = self.worker_id.clone();
        let run_id = run_id.to_owned();
        let now = Utc::now().naive_utc();
        let (batch, changed) = db::run(&self.pool, move |c| {
            match c.transaction(|c| settle_in(c, &run_id, &batch, &worker, now)) {
                Ok(changed) => Ok((batch, changed)),
                Err(diesel::result::Error::RollbackTransaction) => {
                    // The run was closed while this process stalled. The invoices are the
                    // closer's now, but these calls were made: their attempts say what the
                    // provider answered, not `interrupted`.
                    let finished: Vec<_> = last_attempts(&batch).collect();
                    attempts::finish_all(c, &finished, now).map_err(DbError::from)?;
                    Err(BillingError::RunClosed)
                }
                Err(e) => Err(DbError::from(e).into()),
            }
        })
        .await?;
        batch
            .into_iter()
            .filter(|charged| changed.contains(&charged.row.id))
            .map(|charged| {
                let row = settled_row(charged.row, &charged.settlement, now);
                let invoice = Invoice::try_from(row).map_err(BillingError::Corrupt)?;
                Ok((invoice, charged.settlement))
            })
            .collect()
    }
}

/// Writes a group's last attempts, settlements and counts; returns the ids it changed.
fn settle_in(
    c: &mut AnyConnection,
    run_id: &str,
    batch: &[Charged],
    worker: &str,
    now: NaiveDateTime,
) -> diesel::QueryResult<HashSet<String>> {
    // The run first, as closing it takes it (no deadlock between the two).
    if !pay_runs::hold_for_settlement(c, run_id)? {
        return Err(diesel::result::Error::RollbackTransaction);
    }
    let finished: Vec<_> = last_attempts(batch).collect();
    attempts::finish_all(c, &finished, now)?;
    let paid: Vec<(&str, &str)> = batch
        .iter()
        .filter_map(|charged| match &charged.settlement {
            Settlement::Paid { charge_id } => Some((charged.row.id.as_str(), charge_id.as_str())),
            _ => None,
        })
        .collect();
    let mut changed: HashSet<String> = invoices::mark_all_paid(c, &paid, now)?
        .into_iter()
        .collect();
    let mut counts = pay_runs::Counts {
        paid: count(changed.len()),
        ..Default::default()
    };
    for charged in batch {
        let id = &charged.row.id;
        let applied = match &charged.settlement {
            Settlement::Paid { .. } => continue,
            Settlement::Failed { reason } => {
                let applied = invoices::mark_failed(c, id, worker, run_id, reason, now)? == 1;
                counts.failed += i32::from(applied);
                applied
            }
            Settlement::RetryLater { .. } => {
                let applied = invoices::release(c, id, worker, run_id, now)? == 1;
                counts.retry_later += i32::from(applied);
                applied
            }
            Settlement::Attention { reason } => {
                let applied =
                    invoices::release_for_attention(c, id, worker, run_id, reason, now)? == 1;
                counts.retry_later += i32::from(applied);
                applied
            }
        };
        if applied {
            changed.insert(id.clone());
        }
    }
    if !pay_runs::add(c, run_id, counts, now)? {
        // The run was closed as abandoned (this process stalled past its heartbeat):
        // whoever closed it may be paying these invoices now; undo, and stop.
        return Err(diesel::result::Error::RollbackTransaction);
    }
    Ok(changed)
}

/// The last attempt of each charged invoice whose result is not on record yet.
fn last_attempts(batch: &[Charged]) -> impl Iterator<Item = (&str, attempts::Finish<'_>)> {
    batch
        .iter()
        .filter_map(|charged| charged.last.as_ref())
        .map(|last| last.finish())
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The row as `settle_in` left it, without reading it back.
fn settled_row(
    mut row: invoices::InvoiceRow,
    settlement: &Settlement,
    now: NaiveDateTime,
) -> invoices::InvoiceRow {
    let status = match settlement {
        Settlement::Paid { charge_id } => {
            row.charge_id = Some(charge_id.clone());
            row.paid_at = Some(now);
            row.failure_reason = None;
            row.attention = None;
            InvoiceStatus::Paid
        }
        Settlement::Failed { reason } => {
            row.failure_reason = Some(reason.clone());
            row.attention = None;
            InvoiceStatus::Failed
        }
        Settlement::RetryLater { .. } => InvoiceStatus::Pending,
        Settlement::Attention { reason } => {
            row.attention = Some(reason.clone());
            InvoiceStatus::Pending
        }
    };
    row.status = status.as_str().to_owned();
    row.claimed_by = None;
    row.lease_until = None;
    row.updated_at = now;
    row
}
