//! One invoice: charge with retries and backoff, every attempt recorded, then settle.

use std::time::Duration;

use api_contract::{ChargeRequest, CustomerId, InvoiceId, Money};
use backoff::ExponentialBackoffBuilder;
use chrono::Utc;

use super::{Biller, BillingError};
use crate::db::{self, DbError, attempts, invoices};
use crate::domain::{CallOutcome, Invoice, Settlement, idempotency_key_for};

impl Biller {
    #[tracing::instrument(name = "pay_invoice", skip_all, fields(invoice_id = %row.id))]
    pub(super) async fn pay_one(
        &self,
        run_id: &str,
        row: invoices::InvoiceRow,
    ) -> (
        Result<Invoice, BillingError>,
        Result<Settlement, BillingError>,
    ) {
        let settlement = self.charge_with_retries(run_id, &row).await;
        let result = match settlement {
            Ok(settlement) => self.settle(&row.id, settlement).await,
            Err(e) => Err(e),
        };
        // Show the invoice as it now stands.
        let id = row.id.clone();
        let current = db::run(&self.pool, move |c| {
            invoices::find(c, &id).map_err(DbError::from)
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(row);
        let invoice = Invoice::try_from(current).map_err(BillingError::Corrupt);
        (invoice, result)
    }

    async fn charge_with_retries(
        &self,
        run_id: &str,
        row: &invoices::InvoiceRow,
    ) -> Result<Settlement, BillingError> {
        let request = match charge_request(row) {
            Ok(request) => request,
            Err(reason) => return Ok(Settlement::Failed { reason }),
        };
        let key = match idempotency_key_for(&row.id) {
            Ok(key) => key,
            Err(reason) => return Ok(Settlement::Failed { reason }),
        };
        let policy = ExponentialBackoffBuilder::new()
            .with_initial_interval(Duration::from_millis(100))
            .with_multiplier(2.0)
            .with_randomization_factor(0.5)
            .with_max_interval(Duration::from_secs(5))
            .with_max_elapsed_time(Some(self.settings.retry_max_elapsed))
            .build();
        let max_wait = self.settings.retry_max_elapsed;
        let operation = || async {
            let attempt = attempts::AttemptRow {
                id: uuid::Uuid::now_v7().to_string(),
                invoice_id: row.id.clone(),
                pay_run_id: run_id.to_owned(),
                idempotency_key: key.as_str().to_owned(),
                outcome: attempts::STARTED.to_owned(),
                http_status: None,
                detail: None,
                charge_id: None,
                started_at: Utc::now().naive_utc(),
                finished_at: None,
            };
            let attempt_id = attempt.id.clone();
            // Recorded before the call: a crash during it leaves a visible 'started' row.
            db::run(&self.pool, move |c| {
                attempts::start(c, &attempt).map_err(DbError::from)
            })
            .await
            .map_err(|e| backoff::Error::permanent(Stop::Db(e.into())))?;

            let call = self.client.charge(&key, &request).await;
            self.metrics.charge_attempt(call.outcome.label());
            let (detail, charge_id) = match &call.outcome {
                CallOutcome::Succeeded { charge, .. } => (None, Some(charge.id.clone())),
                CallOutcome::Declined { code, detail } => {
                    (Some(format!("{}: {detail}", code.as_str())), None)
                }
                CallOutcome::Retryable { reason, .. }
                | CallOutcome::Unknown { reason }
                | CallOutcome::Rejected { reason } => (Some(reason.clone()), None),
            };
            let outcome = call.outcome.label();
            let http_status = call.http_status;
            db::run(&self.pool, move |c| {
                let finish = attempts::Finish {
                    outcome,
                    http_status,
                    detail: detail.as_deref(),
                    charge_id: charge_id.as_deref(),
                };
                attempts::finish(c, &attempt_id, &finish, Utc::now().naive_utc())
                    .map_err(DbError::from)
            })
            .await
            .map_err(|e| backoff::Error::permanent(Stop::Db(e.into())))?;

            match call.outcome {
                CallOutcome::Succeeded { charge, .. } => Ok(Settlement::Paid {
                    charge_id: charge.id,
                }),
                CallOutcome::Declined { code, .. } => Ok(Settlement::Failed {
                    reason: code.as_str().to_owned(),
                }),
                CallOutcome::Rejected { reason } => Ok(Settlement::RetryLater { reason }),
                CallOutcome::Retryable {
                    reason,
                    retry_after,
                } => {
                    tracing::debug!(%reason, "charge will be retried");
                    Err(backoff::Error::Transient {
                        err: Stop::Transient(reason),
                        retry_after: retry_after.map(|d| d.min(max_wait)),
                    })
                }
                CallOutcome::Unknown { reason } => {
                    tracing::warn!(%reason, "charge outcome unknown; retrying with the same key");
                    Err(backoff::Error::transient(Stop::Transient(reason)))
                }
            }
        };
        match backoff::future::retry(policy, operation).await {
            Ok(settlement) => Ok(settlement),
            Err(Stop::Transient(reason)) => Ok(Settlement::RetryLater { reason }),
            Err(Stop::Db(e)) => Err(e),
        }
    }

    async fn settle(
        &self,
        invoice_id: &str,
        settlement: Settlement,
    ) -> Result<Settlement, BillingError> {
        let (id, worker, s) = (
            invoice_id.to_owned(),
            self.worker_id.clone(),
            settlement.clone(),
        );
        db::run(&self.pool, move |c| {
            let now = Utc::now().naive_utc();
            match &s {
                Settlement::Paid { charge_id } => invoices::mark_paid(c, &id, charge_id, now),
                Settlement::Failed { reason } => {
                    invoices::mark_failed(c, &id, &worker, reason, now)
                }
                Settlement::RetryLater { .. } => invoices::release(c, &id, &worker, now),
            }
            .map_err(DbError::from)
        })
        .await?;
        Ok(settlement)
    }
}

/// Why the backoff loop stopped without a settlement.
#[derive(Debug)]
enum Stop {
    /// Our own database failed: the run stops.
    Db(BillingError),
    /// The provider kept failing transiently until the budget ran out.
    Transient(String),
}

fn charge_request(row: &invoices::InvoiceRow) -> Result<ChargeRequest, String> {
    let currency = row
        .currency
        .parse()
        .map_err(|e| format!("stored invoice: {e}"))?;
    Ok(ChargeRequest {
        invoice_id: InvoiceId::parse(row.id.clone()).map_err(|e| e.to_string())?,
        customer_id: CustomerId::parse(row.customer_id.clone()).map_err(|e| e.to_string())?,
        amount: Money::new(row.amount_minor, currency).map_err(|e| e.to_string())?,
    })
}
