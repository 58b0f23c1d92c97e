//! Scheduled runs by billing period: each period (a fire time of a schedule) is run once
//! across replicas, and by the first one up after it was due if none was up then. Two
//! schedules keep periods of their own: the monthly pay run, and the daily run that retries
//! the past-due invoices that are due and reconciles.

use chrono::{DateTime, SecondsFormat, Utc};
use strum::IntoStaticStr;

use super::{Biller, BillingError, Detail, OpenRun, PayRunReport, Trigger};
use crate::db::{self, billing_periods};
use crate::domain::RunKind;

/// Which schedule a period belongs to, as `billing_periods.schedule` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Cadence {
    /// `PAY_SCHEDULE`: every invoice it can claim (`RunKind::Pay`).
    Monthly,
    /// `DAILY_SCHEDULE`: past-due invoices that are due (`RunKind::Dunning`).
    Daily,
}

impl Cadence {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    fn run_kind(self) -> RunKind {
        match self {
            Cadence::Monthly => RunKind::Pay,
            Cadence::Daily => RunKind::Dunning,
        }
    }

    /// The period's key: the fire time, and for the daily schedule its name before it (the
    /// monthly periods keep the bare time they had before there were two schedules, and a
    /// daily fire time can be a monthly one too).
    fn period(self, due: DateTime<Utc>) -> String {
        let at = due.to_rfc3339_opts(SecondsFormat::Secs, true);
        match self {
            Cadence::Monthly => at,
            Cadence::Daily => format!("{}/{at}", self.as_str()),
        }
    }
}

impl Biller {
    /// Runs the period of `cadence` that fell due at `due` unless another run has it. `None`
    /// when it was taken already, or is the first period of its schedule this database ever
    /// saw (the baseline: the periods before the first start are not owed).
    pub async fn pay_period(
        &self,
        cadence: Cadence,
        due: DateTime<Utc>,
    ) -> Result<Option<PayRunReport>, BillingError> {
        let slot = self.take_slot()?;
        let row = self.new_run_row(cadence.run_kind(), Trigger::Schedule, None);
        let period = cadence.period(due);
        let stored = row.clone();
        let take = db::run(&self.pool, move |c| {
            billing_periods::take(
                c,
                cadence.as_str(),
                &period,
                due.naive_utc(),
                &stored,
                db::clock::now(),
            )
        })
        .await?;
        match take {
            billing_periods::Take::Ours => {
                tracing::info!(period = %due, schedule = cadence.as_str(), run_id = %row.id, "running the billing period");
                let run = OpenRun { row, _slot: slot };
                let report = self.pay(run, Detail::Counts).await?;
                if cadence == Cadence::Daily {
                    // After the retries, the invoices whose charge's answer was lost are
                    // looked up; one that fails is looked up again by the next daily run.
                    match self.reconcile(Trigger::Schedule, None, None).await {
                        Ok(looked_up) => {
                            tracing::info!(summary = ?looked_up.summary, "daily reconciliation finished")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "daily reconciliation failed; the next daily run looks again")
                        }
                    }
                }
                Ok(Some(report))
            }
            billing_periods::Take::Baseline => {
                tracing::info!(period = %due, schedule = cadence.as_str(), "first billing period seen: recorded, not owed");
                Ok(None)
            }
            billing_periods::Take::Taken => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_schedules_never_share_a_period() {
        let due = DateTime::from_timestamp(1_796_083_200, 0).expect("a time");
        assert_eq!(Cadence::Monthly.period(due), "2026-12-01T00:00:00Z");
        assert_eq!(Cadence::Daily.period(due), "daily/2026-12-01T00:00:00Z");
        assert_eq!(Cadence::Monthly.run_kind(), RunKind::Pay);
        assert_eq!(Cadence::Daily.run_kind(), RunKind::Dunning);
    }
}
