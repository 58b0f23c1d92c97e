//! The in-process schedules, monthly and daily. Every replica runs them; a billing period
//! is run once across them (see `billing::periods`), and a period that fell due while none
//! was up is run by the first one up. Housekeeping, on whether or not the schedule is, closes the runs of
//! processes that died and deletes idempotency keys past their retention.

use std::sync::Arc;
use std::time::Duration;

use crate::billing::{Biller, BillingError, Cadence};
use crate::db::{self, DbPool};
use crate::invoices;

/// Between fire times the schedule still looks every so often, for a period whose run was
/// abandoned.
const RECHECK: Duration = Duration::from_secs(60);

pub fn spawn(
    biller: Arc<Biller>,
    cadence: Cadence,
    schedule: cron::Schedule,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // The latest fire time that has passed is owed one run.
            if let Some(due) = schedule.after(&db::clock::utc_now()).next_back() {
                match biller.pay_period(cadence, due).await {
                    Ok(_) => {}
                    Err(BillingError::ShuttingDown) => return,
                    // Tried again at the next look (busy, database down, ...).
                    Err(e) => {
                        tracing::error!(error = %e, period = %due, schedule = cadence.as_str(), "scheduled run failed")
                    }
                }
            }
            let next = schedule.after(&db::clock::utc_now()).next();
            if let Some(next) = next {
                tracing::debug!(next = %next, schedule = cadence.as_str(), "next scheduled run");
            }
            let wait = next
                .and_then(|n| (n - db::clock::utc_now()).to_std().ok())
                .map_or(RECHECK, |w| w.min(RECHECK));
            tokio::time::sleep(wait).await;
        }
    })
}

/// Closes the runs of dead processes every `every` (a run silent for a lease is dead), so
/// none reads `running` for longer than about a lease and a half, schedule or not; and
/// deletes `POST /invoices` idempotency keys older than `key_retention`, a bounded number
/// each time.
pub fn spawn_housekeeping(
    biller: Arc<Biller>,
    pool: DbPool,
    key_retention: Duration,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = biller.close_abandoned().await {
                tracing::warn!(error = %e, "could not close abandoned pay runs");
            }
            match invoices::prune_idempotency_keys(&pool, key_retention).await {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "deleted expired idempotency keys"),
                Err(e) => tracing::warn!(error = %e, "could not delete expired idempotency keys"),
            }
        }
    })
}
