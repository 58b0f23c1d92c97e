//! One invoice: one call per attempt, a retry policy with a hard budget, every attempt
//! recorded when its call starts.
//!
//! An attempt begins by renewing the run's claim and recording the attempt, in one
//! transaction, right before the call: an invoice another worker took over is never called,
//! the lease runs from the call (not from the claim), and the audit trail holds calls made,
//! not calls planned. The last attempt's result and the invoice's new status are written
//! later, with whatever else finished meanwhile, in one transaction (see `settle`).

use std::time::{Duration, Instant};

use api_contract::DeclineClass;
use api_contract::{ChargeRequest, CustomerId, IdempotencyKey, InvoiceId, Money};
use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use chrono::{NaiveDateTime, TimeDelta};
use diesel::Connection;

use super::{Biller, BillingError};
use crate::db::{self, DbError, attempts, invoices, pay_runs};
use crate::domain::{
    AttemptId, AttemptKind, AttemptOutcome, CallOutcome, DunningSchedule, RunId, Sent, Settlement,
    idempotency_key_for,
};
use crate::payment_client::CallResult;

/// The longest wait between two attempts.
const MAX_INTERVAL: Duration = Duration::from_secs(5);

/// The result of one call, as its attempt record keeps it.
fn attempt_result(attempt_id: AttemptId, call: &CallResult) -> attempts::Finished {
    call_record(attempt_id, &call.outcome, call.sent, call.http_status)
}

/// What an attempt's record keeps of a call that ended with `outcome`.
pub(super) fn call_record(
    attempt_id: AttemptId,
    outcome: &CallOutcome,
    sent: Sent,
    http_status: Option<u16>,
) -> attempts::Finished {
    let (detail, charge_id, provider_code) = match outcome {
        CallOutcome::Succeeded { charge, .. } => (None, Some(charge.id.clone()), None),
        CallOutcome::Declined { code, detail, .. } => (
            Some(format!("{}: {detail}", code.as_str())),
            None,
            Some(*code),
        ),
        CallOutcome::Retryable { reason, .. }
        | CallOutcome::Unknown { reason }
        | CallOutcome::Attention { reason } => (Some(reason.clone()), None, None),
    };
    attempts::Finished {
        attempt_id,
        outcome: outcome.attempt_outcome(),
        sent,
        http_status,
        detail,
        charge_id,
        provider_code,
    }
}

/// An invoice charged (or given up on) and not yet settled in the database.
pub(super) struct Charged {
    pub(super) row: invoices::InvoiceRow,
    pub(super) settlement: Settlement,
    /// The last attempt's result, unless it is already on record.
    pub(super) last: Option<attempts::Finished>,
}

/// What the provider's answer means for the loop.
pub(super) enum Verdict {
    Settle(Settlement),
    /// Not settled; worth another attempt if the budget allows.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// What `outcome` means for `row`, declined at `now` where it was: a hard decline fails it,
/// a soft one goes by the dunning `schedule`.
pub(super) fn verdict(
    outcome: CallOutcome,
    row: &invoices::InvoiceRow,
    schedule: &DunningSchedule,
    now: NaiveDateTime,
) -> Verdict {
    match outcome {
        CallOutcome::Succeeded { charge, .. } => Verdict::Settle(Settlement::Paid {
            charge_id: charge.id,
        }),
        CallOutcome::Declined {
            code,
            class: DeclineClass::Hard,
            ..
        } => Verdict::Settle(Settlement::Failed {
            reason: code.as_str().to_owned(),
            decline: Some(DeclineClass::Hard),
        }),
        CallOutcome::Declined {
            code,
            class: DeclineClass::Soft,
            ..
        } => Verdict::Settle(schedule.settle_decline(
            code.as_str().to_owned(),
            row.attempt_count,
            row.past_due_since,
            now,
        )),
        CallOutcome::Attention { reason } => Verdict::Settle(Settlement::Attention { reason }),
        CallOutcome::Retryable {
            reason,
            retry_after,
        } => Verdict::Transient {
            reason,
            retry_after,
        },
        // Retried with the same key: the provider's replay tells what happened.
        CallOutcome::Unknown { reason } => Verdict::Transient {
            reason,
            retry_after: None,
        },
    }
}

/// The retry policy of one invoice in one run: exponential backoff with jitter, waits no
/// shorter than the provider's `Retry-After`, and no attempt starting after the budget.
/// `Retry-After` can only end the turn sooner, never extend it.
pub(super) struct RetryBudget {
    deadline: Instant,
    intervals: ExponentialBackoff,
}

impl RetryBudget {
    pub(super) fn new(budget: Duration, now: Instant) -> Self {
        let intervals = ExponentialBackoff {
            initial_interval: Duration::from_millis(100),
            current_interval: Duration::from_millis(100),
            multiplier: 2.0,
            randomization_factor: 0.5,
            max_interval: MAX_INTERVAL,
            // The deadline below is the budget; the crate's own check is skipped whenever a
            // Retry-After is given, so it is not relied on.
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        RetryBudget {
            deadline: now + budget,
            intervals,
        }
    }

    /// How long to wait before the next attempt, or why none starts within the budget.
    pub(super) fn next_wait(
        &mut self,
        retry_after: Option<Duration>,
        now: Instant,
    ) -> Result<Duration, String> {
        let interval = self.intervals.next_backoff().unwrap_or(MAX_INTERVAL);
        let wait = retry_after.map_or(interval, |asked| asked.max(interval));
        let left = self.deadline.saturating_duration_since(now);
        if wait < left {
            return Ok(wait);
        }
        Err(match retry_after {
            Some(asked) if asked >= left => format!(
                "Retry-After of {}s is beyond the {:.1}s left of the retry budget",
                asked.as_secs(),
                left.as_secs_f64()
            ),
            _ => "retry budget used up".to_owned(),
        })
    }
}

impl Biller {
    /// Charges `row` until it settles or its budget is spent. `None` when another worker
    /// took the invoice over before a call started: this run leaves it alone.
    #[tracing::instrument(name = "pay_invoice", skip_all, fields(invoice_id = %row.id))]
    pub(super) async fn pay_one(
        &self,
        run_id: &RunId,
        row: invoices::InvoiceRow,
    ) -> Result<Option<Charged>, BillingError> {
        let (request, key) = match (
            charge_request(&row),
            idempotency_key_for(&row.id, row.attempt_count),
        ) {
            (Ok(request), Ok(key)) => (request, key),
            (Err(reason), _) | (_, Err(reason)) => {
                let settlement = Settlement::Failed {
                    reason,
                    decline: None,
                };
                return Ok(Some(Charged {
                    row,
                    settlement,
                    last: None,
                }));
            }
        };
        let mut budget = RetryBudget::new(self.settings.retry_max_elapsed, Instant::now());
        let mut last_reason: Option<String> = None;
        loop {
            // Stopping: no new call. An invoice not called yet stays claimed for the
            // shutdown to hand back; one between retries goes back to pending, saying why.
            if self.is_stopping() {
                return Ok(last_reason.map(|reason| Charged {
                    row,
                    settlement: Settlement::RetryLater {
                        reason: format!("{reason}; the process is shutting down"),
                    },
                    last: None,
                }));
            }
            let Some(attempt_id) = self
                .begin_attempt(run_id, &row, &key, AttemptKind::Charge)
                .await?
            else {
                tracing::info!("claim taken over by another worker; not calling");
                return Ok(None);
            };
            let call = self.client.charge(&key, &request).await;
            self.metrics
                .charge_attempt(call.outcome.attempt_outcome(), call.http_status.is_some());
            let recorded = attempt_result(attempt_id, &call);
            let now = db::clock::now();
            let (reason, retry_after) =
                match verdict(call.outcome, &row, &self.settings.dunning, now) {
                    Verdict::Settle(settlement) => {
                        return Ok(Some(Charged {
                            row,
                            settlement,
                            last: Some(recorded),
                        }));
                    }
                    Verdict::Transient {
                        reason,
                        retry_after,
                    } => (reason, retry_after),
                };
            // Transient results are completed at once: the settlement comes later, if ever.
            self.finish_attempt(recorded).await?;
            match budget.next_wait(retry_after, Instant::now()) {
                Ok(wait) => {
                    tracing::debug!(%reason, ?wait, "charge will be retried");
                    self.sleep_unless_stopping(wait).await;
                    last_reason = Some(reason);
                }
                Err(why) => {
                    let settlement = Settlement::RetryLater {
                        reason: format!("{reason}; {why}"),
                    };
                    return Ok(Some(Charged {
                        row,
                        settlement,
                        last: None,
                    }));
                }
            }
        }
    }

    /// Renews the run's claim and records a new attempt, in one transaction that also holds
    /// the run open (`hold_open`); the attempt's id, or `None` when the claim is no longer
    /// this run's. A run closed meanwhile (this process stalled past its heartbeat and
    /// another closed the run) makes no call: [`BillingError::RunClosed`].
    pub(super) async fn begin_attempt(
        &self,
        run_id: &RunId,
        row: &invoices::InvoiceRow,
        key: &IdempotencyKey,
        kind: AttemptKind,
    ) -> Result<Option<AttemptId>, BillingError> {
        let lease = TimeDelta::from_std(self.settings.lease).unwrap_or(TimeDelta::MAX);
        let worker = self.worker_id.clone();
        let (run_id, invoice_id, key) = (run_id.clone(), row.id.clone(), key.clone());
        db::run(&self.pool, move |c| {
            let begun = c.transaction::<_, diesel::result::Error, _>(|c| {
                // The run before the invoice, as closing takes them (no deadlock).
                if !pay_runs::hold_open(c, &run_id)? {
                    return Err(diesel::result::Error::RollbackTransaction);
                }
                // The lease and the attempt's time run from now, after any wait for the lock.
                let now = db::clock::now();
                if !invoices::renew(
                    c,
                    &invoice_id,
                    invoices::Holder {
                        worker: &worker,
                        run: &run_id,
                    },
                    now,
                    now + lease,
                )? {
                    return Ok(None);
                }
                let attempt = new_attempt(&run_id, &invoice_id, &key, kind, now);
                attempts::start(c, &attempt)?;
                Ok(Some(attempt.id))
            });
            match begun {
                Ok(held) => Ok(held),
                Err(diesel::result::Error::RollbackTransaction) => Err(BillingError::RunClosed),
                Err(e) => Err(DbError::from(e).into()),
            }
        })
        .await
    }

    async fn finish_attempt(&self, recorded: attempts::Finished) -> Result<(), BillingError> {
        db::run(&self.pool, move |c| {
            attempts::finish(c, &recorded, db::clock::now())
        })
        .await
        .map_err(BillingError::from)
    }
}

fn new_attempt(
    run_id: &RunId,
    invoice_id: &str,
    key: &IdempotencyKey,
    kind: AttemptKind,
    now: chrono::NaiveDateTime,
) -> attempts::AttemptRow {
    attempts::AttemptRow {
        id: AttemptId::generate(),
        invoice_id: invoice_id.to_owned(),
        pay_run_id: run_id.clone(),
        idempotency_key: key.as_str().to_owned(),
        outcome: AttemptOutcome::Started,
        http_status: None,
        detail: None,
        charge_id: None,
        started_at: now,
        finished_at: None,
        sent: None,
        provider_code: None,
        kind,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A hard decline fails the invoice with its code as the reason; a soft one makes it
    /// past due, counted from its first decline, until the schedule is spent.
    #[test]
    fn a_decline_settles_by_its_class_and_the_schedule() {
        use api_contract::ErrorCode;
        let at = |day: i64| {
            chrono::DateTime::from_timestamp(1_796_083_200 + day * 86_400, 0)
                .expect("a time")
                .naive_utc()
        };
        let row = |declines: i32| invoices::InvoiceRow {
            id: "inv-1".into(),
            customer_id: "C001".into(),
            amount_minor: 100,
            currency: "EUR".into(),
            description: String::new(),
            status: crate::domain::InvoiceStatus::Processing,
            failure_reason: None,
            charge_id: None,
            claimed_by: None,
            lease_until: None,
            last_run_id: None,
            created_at: at(0),
            updated_at: at(0),
            paid_at: None,
            attention: None,
            created_by: None,
            attempt_count: declines,
            past_due_since: (declines > 0).then_some(at(0)),
            next_attempt_at: None,
        };
        let schedule = DunningSchedule::default();
        let declined = |code, class| CallOutcome::Declined {
            code,
            class,
            detail: "d".into(),
        };
        let settle =
            |outcome, declines, day| match verdict(outcome, &row(declines), &schedule, at(day)) {
                Verdict::Settle(settled) => settled,
                Verdict::Transient { .. } => panic!("a decline must settle"),
            };
        for declines in [0, 3] {
            assert_eq!(
                settle(
                    declined(ErrorCode::AccountClosed, DeclineClass::Hard),
                    declines,
                    1
                ),
                Settlement::Failed {
                    reason: "account_closed".into(),
                    decline: Some(DeclineClass::Hard),
                }
            );
        }
        assert_eq!(
            settle(declined(ErrorCode::TryAgainLater, DeclineClass::Soft), 0, 1),
            Settlement::PastDue {
                reason: "try_again_later".into(),
                attempt_count: 1,
                next_attempt_at: at(4),
                since: at(1),
            }
        );
        assert_eq!(
            settle(
                declined(ErrorCode::InsufficientFunds, DeclineClass::Soft),
                2,
                5
            ),
            Settlement::PastDue {
                reason: "insufficient_funds".into(),
                attempt_count: 3,
                next_attempt_at: at(7),
                since: at(0),
            }
        );
        assert_eq!(
            settle(
                declined(ErrorCode::InsufficientFunds, DeclineClass::Soft),
                3,
                7
            ),
            Settlement::Uncollectible {
                reason: "insufficient_funds".into(),
                attempt_count: 4,
            }
        );
    }

    #[test]
    fn retry_after_never_extends_the_budget() {
        let start = Instant::now();
        let mut budget = RetryBudget::new(Duration::from_secs(2), start);
        // Retry-After longer than what is left ends the turn at once.
        let why = budget
            .next_wait(Some(Duration::from_secs(3)), start)
            .expect_err("beyond the budget");
        assert!(why.contains("Retry-After of 3s"), "{why}");
        // A short Retry-After is honoured (never waited less than it).
        let wait = budget
            .next_wait(Some(Duration::from_secs(1)), start)
            .expect("within the budget");
        assert!(wait >= Duration::from_secs(1));
        // Nothing starts once the deadline has passed, whatever is asked.
        let late = start + Duration::from_secs(2);
        assert!(budget.next_wait(Some(Duration::ZERO), late).is_err());
        assert!(budget.next_wait(None, late).is_err());
    }

    #[test]
    fn backoff_grows_and_stays_within_the_budget() {
        let start = Instant::now();
        let mut budget = RetryBudget::new(Duration::from_secs(60), start);
        let mut now = start;
        let mut waits = Vec::new();
        while let Ok(wait) = budget.next_wait(None, now) {
            now += wait;
            waits.push(wait);
        }
        assert!(now <= start + Duration::from_secs(60));
        assert!(
            waits.iter().all(|w| *w <= MAX_INTERVAL.mul_f64(1.5)),
            "{waits:?}"
        );
        assert!(waits.len() > 5, "{waits:?}");
    }
}
