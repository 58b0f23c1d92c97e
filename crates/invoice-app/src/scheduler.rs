//! The in-process monthly pay run. Every replica runs it; the claims make that safe.

use std::sync::Arc;

use chrono::Utc;

use crate::billing::{Biller, BillingError, Trigger};

pub fn spawn(biller: Arc<Biller>, schedule: cron::Schedule) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(next) = schedule.upcoming(Utc).next() {
            tracing::info!(next = %next, "next scheduled pay run");
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            match biller.pay_all(Trigger::Schedule, false).await {
                Ok(_) => {}
                Err(BillingError::ShuttingDown) => return,
                // Logged by the run itself; the next date is tried as usual.
                Err(e) => tracing::error!(error = %e, "scheduled pay run failed"),
            }
        }
    })
}
