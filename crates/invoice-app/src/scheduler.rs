//! The in-process schedule. Every replica runs it; a billing period is paid once across
//! them (see `billing::periods`), and a period that fell due while none was up is paid by
//! the first one up. It also closes runs whose process died.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::billing::{Biller, BillingError};

/// Between fire times the schedule still looks every so often: for a period whose run was
/// abandoned, and for runs to close.
const RECHECK: Duration = Duration::from_secs(60);

pub fn spawn(biller: Arc<Biller>, schedule: cron::Schedule) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = biller.close_abandoned().await {
                tracing::warn!(error = %e, "could not close abandoned pay runs");
            }
            // The latest fire time that has passed is owed one run.
            if let Some(due) = schedule.after(&Utc::now()).next_back() {
                match biller.pay_period(due).await {
                    Ok(_) => {}
                    Err(BillingError::ShuttingDown) => return,
                    // Tried again at the next look (busy, database down, ...).
                    Err(e) => {
                        tracing::error!(error = %e, period = %due, "scheduled pay run failed")
                    }
                }
            }
            let next = schedule.upcoming(Utc).next();
            if let Some(next) = next {
                tracing::debug!(next = %next, "next scheduled pay run");
            }
            let wait = next
                .and_then(|n| (n - Utc::now()).to_std().ok())
                .map_or(RECHECK, |w| w.min(RECHECK));
            tokio::time::sleep(wait).await;
        }
    })
}
