//! Scheduled pay runs by billing period: each period (a fire time of the schedule) is paid
//! by one run across replicas, and by the first one up after it was due if none was up then.

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Biller, BillingError, Detail, OpenRun, PayRunReport, Trigger};
use crate::db::{self, billing_periods};
use crate::domain::RunKind;

impl Biller {
    /// Pays the period that fell due at `due` unless another run has it. `None` when it was
    /// taken already, or is the first period this database ever saw (the baseline: the
    /// periods before the first start are not owed).
    pub async fn pay_period(
        &self,
        due: DateTime<Utc>,
    ) -> Result<Option<PayRunReport>, BillingError> {
        let slot = self.take_slot()?;
        let row = self.new_run_row(RunKind::Pay, Trigger::Schedule, None);
        let period = due.to_rfc3339_opts(SecondsFormat::Secs, true);
        let stored = row.clone();
        let take = db::run(&self.pool, move |c| {
            billing_periods::take(c, &period, due.naive_utc(), &stored, db::clock::now())
        })
        .await?;
        match take {
            billing_periods::Take::Ours => {
                tracing::info!(period = %due, run_id = %row.id, "paying the billing period");
                let run = OpenRun { row, _slot: slot };
                self.pay(run, Detail::Counts).await.map(Some)
            }
            billing_periods::Take::Baseline => {
                tracing::info!(period = %due, "first billing period seen: recorded, not owed");
                Ok(None)
            }
            billing_periods::Take::Taken => Ok(None),
        }
    }
}
