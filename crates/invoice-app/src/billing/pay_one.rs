//! One invoice: charge with retries and backoff, every attempt recorded, then settle.
//!
//! The first attempt of each invoice is recorded with the rest of its claimed batch in one
//! insert before any call is made; the last attempt's result and the invoice's new status
//! are written with whatever else finished meanwhile, in one transaction. Retries in
//! between record and complete their own attempts.

use std::collections::HashSet;
use std::time::Duration;

use api_contract::{ChargeRequest, CustomerId, InvoiceId, Money};
use backoff::ExponentialBackoffBuilder;
use chrono::{NaiveDateTime, Utc};
use diesel::Connection;

use super::{Biller, BillingError};
use crate::db::{self, AnyConnection, DbError, attempts, invoices};
use crate::domain::{CallOutcome, Invoice, InvoiceStatus, Settlement, idempotency_key_for};

/// The result of one call, as the attempt record keeps it.
struct Recorded {
    attempt_id: String,
    outcome: &'static str,
    http_status: Option<u16>,
    detail: Option<String>,
    charge_id: Option<String>,
}

impl Recorded {
    fn finish(&self) -> attempts::Finish<'_> {
        attempts::Finish {
            outcome: self.outcome,
            http_status: self.http_status,
            detail: self.detail.as_deref(),
            charge_id: self.charge_id.as_deref(),
        }
    }

    fn write(&self, c: &mut AnyConnection, now: NaiveDateTime) -> diesel::QueryResult<()> {
        attempts::finish(c, &self.attempt_id, &self.finish(), now)
    }
}

/// An invoice charged (or given up on) and not yet settled in the database.
pub(super) struct Charged {
    row: invoices::InvoiceRow,
    settlement: Settlement,
    /// The last attempt's result, unless it is already on record.
    last: Option<Recorded>,
}

/// Why the backoff loop stopped without a settlement.
#[derive(Debug)]
enum Stop {
    /// Our own database failed: the run stops.
    Db(BillingError),
    /// The provider kept failing transiently until the budget ran out.
    Transient(String),
}

/// A new attempt row for `row`, not yet completed.
pub(super) fn new_attempt(run_id: &str, row: &invoices::InvoiceRow) -> attempts::AttemptRow {
    attempts::AttemptRow {
        id: uuid::Uuid::now_v7().to_string(),
        invoice_id: row.id.clone(),
        pay_run_id: run_id.to_owned(),
        idempotency_key: idempotency_key_for(&row.id)
            .map(|k| k.as_str().to_owned())
            .unwrap_or_default(),
        outcome: attempts::STARTED.to_owned(),
        http_status: None,
        detail: None,
        charge_id: None,
        started_at: Utc::now().naive_utc(),
        finished_at: None,
    }
}

impl Biller {
    /// Charges `row`, whose first attempt `first_attempt` is already on record. The result
    /// is written by [`Biller::settle_all`] together with others that finished meanwhile.
    #[tracing::instrument(name = "pay_invoice", skip_all, fields(invoice_id = %row.id))]
    pub(super) async fn pay_one(
        &self,
        run_id: &str,
        row: invoices::InvoiceRow,
        first_attempt: String,
    ) -> Result<Charged, BillingError> {
        let (settlement, last) = self
            .charge_with_retries(run_id, &row, first_attempt)
            .await?;
        Ok(Charged {
            row,
            settlement,
            last,
        })
    }

    /// Returns the settlement and, unless it is already on record, the last attempt's result.
    async fn charge_with_retries(
        &self,
        run_id: &str,
        row: &invoices::InvoiceRow,
        first_attempt: String,
    ) -> Result<(Settlement, Option<Recorded>), BillingError> {
        let (request, key) = match (charge_request(row), idempotency_key_for(&row.id)) {
            (Ok(request), Ok(key)) => (request, key),
            (Err(reason), _) | (_, Err(reason)) => {
                return Ok((Settlement::Failed { reason }, None));
            }
        };
        let policy = ExponentialBackoffBuilder::new()
            .with_initial_interval(Duration::from_millis(100))
            .with_multiplier(2.0)
            .with_randomization_factor(0.5)
            .with_max_interval(Duration::from_secs(5))
            .with_max_elapsed_time(Some(self.settings.retry_max_elapsed))
            .build();
        let max_wait = self.settings.retry_max_elapsed;
        let first = std::sync::Mutex::new(Some(first_attempt));
        let operation = || async {
            let pre_recorded = first.lock().ok().and_then(|mut f| f.take());
            let attempt_id = match pre_recorded {
                Some(id) => id,
                None => {
                    // A retry: recorded before the call, like the first attempt.
                    let attempt = new_attempt(run_id, row);
                    let id = attempt.id.clone();
                    db::run(&self.pool, move |c| {
                        attempts::start(c, &attempt).map_err(DbError::from)
                    })
                    .await
                    .map_err(|e| backoff::Error::permanent(Stop::Db(e.into())))?;
                    id
                }
            };

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
            let recorded = Recorded {
                attempt_id,
                outcome: call.outcome.label(),
                http_status: call.http_status,
                detail,
                charge_id,
            };
            // A settlement ends the loop; a transient failure (with its Retry-After) goes on.
            let verdict = match call.outcome {
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
                    Err((reason, retry_after))
                }
                CallOutcome::Unknown { reason } => {
                    tracing::warn!(%reason, "charge outcome unknown; retrying with the same key");
                    Err((reason, None))
                }
            };
            let (reason, retry_after) = match verdict {
                Ok(settlement) => return Ok((settlement, Some(recorded))),
                Err(transient) => transient,
            };
            // Transient results are completed at once: the settlement comes later, if ever.
            db::run(&self.pool, move |c| {
                recorded
                    .write(c, Utc::now().naive_utc())
                    .map_err(DbError::from)
            })
            .await
            .map_err(|e| backoff::Error::permanent(Stop::Db(e.into())))?;
            Err(backoff::Error::Transient {
                err: Stop::Transient(reason),
                retry_after: retry_after.map(|d| d.min(max_wait)),
            })
        };
        match backoff::future::retry(policy, operation).await {
            Ok(settled) => Ok(settled),
            Err(Stop::Transient(reason)) => Ok((Settlement::RetryLater { reason }, None)),
            Err(Stop::Db(e)) => Err(e),
        }
    }

    /// Completes the last attempts and records the settlements of a group of charged
    /// invoices in one transaction (one commit instead of one per invoice), and returns the invoices as they
    /// now stand with their settlements. A crash before it commits loses nothing: the
    /// invoices stay claimed until their lease runs out, and the next charge with the same
    /// key is replayed by the provider.
    pub(super) async fn settle_all(
        &self,
        batch: Vec<Charged>,
    ) -> Result<Vec<(Invoice, Settlement)>, BillingError> {
        let worker = self.worker_id.clone();
        let now = Utc::now().naive_utc();
        let (batch, applied) = db::run(&self.pool, move |c| {
            let applied = c.transaction(|c| settle_in(c, &batch, &worker, now));
            applied
                .map(|applied| (batch, applied))
                .map_err(DbError::from)
        })
        .await?;
        let mut settled = Vec::with_capacity(batch.len());
        for (charged, applied) in batch.into_iter().zip(applied) {
            let current = if applied {
                settled_row(charged.row, &charged.settlement, now)
            } else {
                // Another worker holds the invoice now (our lease ran out): show what is stored.
                let id = charged.row.id.clone();
                db::run(&self.pool, move |c| {
                    invoices::find(c, &id).map_err(DbError::from)
                })
                .await?
                .unwrap_or(charged.row)
            };
            let invoice = Invoice::try_from(current).map_err(BillingError::Corrupt)?;
            settled.push((invoice, charged.settlement));
        }
        Ok(settled)
    }
}

/// Writes a group's last attempts and settlements; says for each invoice whether this
/// worker's settlement applied.
fn settle_in(
    c: &mut AnyConnection,
    batch: &[Charged],
    worker: &str,
    now: NaiveDateTime,
) -> diesel::QueryResult<Vec<bool>> {
    let finished: Vec<_> = batch
        .iter()
        .filter_map(|charged| charged.last.as_ref())
        .map(|last| (last.attempt_id.as_str(), last.finish()))
        .collect();
    attempts::finish_all(c, &finished, now)?;
    let paid: Vec<(&str, &str)> = batch
        .iter()
        .filter_map(|charged| match &charged.settlement {
            Settlement::Paid { charge_id } => Some((charged.row.id.as_str(), charge_id.as_str())),
            _ => None,
        })
        .collect();
    let changed: HashSet<String> = invoices::mark_all_paid(c, &paid, now)?
        .into_iter()
        .collect();
    batch
        .iter()
        .map(|charged| {
            let id = &charged.row.id;
            Ok(match &charged.settlement {
                Settlement::Paid { .. } => changed.contains(id),
                Settlement::Failed { reason } => {
                    invoices::mark_failed(c, id, worker, reason, now)? == 1
                }
                Settlement::RetryLater { .. } => invoices::release(c, id, worker, now)? == 1,
            })
        })
        .collect()
}

/// The row as `settle` left it, without reading it back.
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
            InvoiceStatus::Paid
        }
        Settlement::Failed { reason } => {
            row.failure_reason = Some(reason.clone());
            InvoiceStatus::Failed
        }
        Settlement::RetryLater { .. } => InvoiceStatus::Pending,
    };
    row.status = status.as_str().to_owned();
    row.claimed_by = None;
    row.lease_until = None;
    row.updated_at = now;
    row
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
