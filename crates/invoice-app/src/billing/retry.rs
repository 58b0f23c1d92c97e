//! An operator's retry of one invoice: charged now, in a pay run of its own that takes
//! only that invoice, under the key its declines so far give it (as a dunning retry), so
//! every exactly-once rule of a run holds unchanged.

use std::sync::Arc;

use chrono::TimeDelta;
use diesel::Connection;

use super::{Biller, BillingError, Detail, OpenRun, PayRunReport, Source, Stopped};
use crate::db::{self, DbError, actions, invoices, pay_runs};
use crate::domain::{Action, Refusal, RunKind, Trigger};

/// What a retry came to.
#[derive(Debug)]
pub enum RetryNow {
    /// Its run is over (paid, declined or handed back): the run's report.
    Ran(PayRunReport),
    /// Not charged: the invoice is not one to retry now.
    Refused(Refusal),
    NotFound,
}

impl Biller {
    /// Charges invoice `action.invoice_id` now in a run of its own, started through the API
    /// by `action.actor`. The run's row, the claim of the invoice and `action` (with the
    /// run's id) are written in one transaction: a refused retry leaves no run and no
    /// action behind, and a recorded one has its run. A run that stopped before it was
    /// done is [`BillingError::Stopped`]; the run goes on if the caller goes away.
    pub async fn retry_now(
        self: &Arc<Self>,
        mut action: actions::ActionRow,
    ) -> Result<RetryNow, BillingError> {
        let slot = self.take_slot()?;
        if let Err(e) = self.close_abandoned().await {
            tracing::warn!(error = %e, "could not close abandoned pay runs; the next run tries again");
        }
        let run = self.new_run_row(RunKind::Pay, Trigger::Api, Some(action.actor.clone()));
        let lease = TimeDelta::from_std(self.settings.lease).unwrap_or(TimeDelta::MAX);
        let (worker, stored) = (self.worker_id.clone(), run.clone());
        let claimed = db::run(&self.pool, move |c| {
            c.transaction::<_, diesel::result::Error, _>(|c| {
                let now = db::clock::now();
                let holder = invoices::Holder {
                    worker: &worker,
                    run: &stored.id,
                };
                let id = action.invoice_id.clone();
                if let Some(row) = invoices::claim_one(c, &id, holder, now, now + lease)? {
                    pay_runs::insert(c, &stored)?;
                    action.pay_run_id = Some(stored.id.clone());
                    action.created_at = now;
                    actions::insert(c, &action)?;
                    return Ok(Ok(row));
                }
                let Some(row) = invoices::find(c, &id)? else {
                    return Ok(Err(None));
                };
                // Not claimable a moment ago, claimable now: a run settled it in between.
                // It was being charged, which is what the caller is told.
                let refusal = Action::Retry
                    .admits(row.status, row.attention.is_some())
                    .err()
                    .unwrap_or(Refusal::Processing);
                Ok(Err(Some(refusal)))
            })
            .map_err(DbError::from)
        })
        .await?;
        let row = match claimed {
            Ok(row) => row,
            Err(None) => return Ok(RetryNow::NotFound),
            Err(Some(refusal)) => return Ok(RetryNow::Refused(refusal)),
        };
        let open = OpenRun {
            row: run,
            _slot: slot,
        };
        let report = self
            .spawn_pay_from(open, Source::Given(vec![row]), Detail::Counts)
            .await?;
        match report.error {
            None => Ok(RetryNow::Ran(report)),
            Some(error) => Err(BillingError::Stopped(Box::new(Stopped {
                run_id: report.run_id,
                summary: report.summary,
                error,
            }))),
        }
    }
}
