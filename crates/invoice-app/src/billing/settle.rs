//! Recording what a group of charged invoices came to: their last attempts, their new
//! status, and the run's counts, in one transaction, so a run's counts are exactly the rows
//! it changed, even if the process dies right after.

use std::collections::HashSet;

use chrono::NaiveDateTime;
use diesel::Connection;

use super::pay_one::Charged;
use super::{Biller, BillingError};
use crate::db::{self, AnyConnection, DbError, attempts, invoices, pay_runs};
use crate::domain::{Invoice, RunId, RunResult, Settlement, Summary, WorkerId};

impl Biller {
    /// Settles `batch` for `run_id` and returns the invoices whose rows this run changed, as
    /// they now stand. An invoice another worker holds by now is left as it is (but a
    /// payment is recorded whoever holds it: the provider's answer is the truth, and the
    /// holder's replay of the same key will find it paid). A crash before the commit loses
    /// nothing: the claims lapse and the next call with the same key is replayed.
    pub(super) async fn settle(
        &self,
        run_id: &RunId,
        batch: Vec<Charged>,
    ) -> Result<Vec<(Invoice, Settlement)>, BillingError> {
        let worker = self.worker_id.clone();
        let run_id = run_id.clone();
        let now = db::clock::now();
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
                let row = invoices::settled(charged.row, &charged.settlement.transition(), now);
                let invoice = Invoice::try_from(row).map_err(BillingError::Corrupt)?;
                Ok((invoice, charged.settlement))
            })
            .collect()
    }
}

/// Writes a group's last attempts, settlements and counts; returns the ids it changed.
fn settle_in(
    c: &mut AnyConnection,
    run_id: &RunId,
    batch: &[Charged],
    worker: &WorkerId,
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
    let mut counts = Summary::default();
    counts.add(RunResult::Paid, to_count(changed.len()));
    let holder = invoices::Holder {
        worker,
        run: run_id,
    };
    for charged in batch {
        if let Settlement::Paid { .. } = charged.settlement {
            continue; // written above, all at once
        }
        let t = charged.settlement.transition();
        let id = &charged.row.id;
        if invoices::settle(c, id, holder, &t, now)? == 1 {
            counts.add(t.counts_as, 1);
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
fn last_attempts(batch: &[Charged]) -> impl Iterator<Item = &attempts::Finished> {
    batch.iter().filter_map(|charged| charged.last.as_ref())
}

fn to_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
