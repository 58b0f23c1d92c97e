//! Reconciliation (Kill Bill's Janitor is the model): an invoice that may have been charged
//! (its last call never learnt its answer, or it waits for attention) is looked up at the
//! provider under its current idempotency key, and what the provider holds settles it.
//!
//! A reconcile run claims its invoices as a pay run does, so no run charges an invoice while
//! it is looked up and two replicas never look one up together; each lookup is an attempt
//! of kind `lookup`, recorded before its call like a charge; the settlement goes through
//! the same state machine and the same settling transaction. It charges nothing.

use api_contract::{ChargeResponse, IdempotencyKey, InvoiceId};
use chrono::{NaiveDateTime, TimeDelta};
use futures_util::{StreamExt, stream};

use super::pay_one::{Charged, Verdict, call_record, verdict};
use super::{Biller, BillingError, Detail, PayRunReport, Trigger, Work};
use crate::db::{self, attempts, invoices, pay_runs};
use crate::domain::{
    AttemptId, AttemptKind, AttemptOutcome, CallOutcome, DunningSchedule, LookupOutcome, RunId,
    RunKind, Settlement, idempotency_key_for,
};
use crate::payment_client::LookupResult;

/// What one lookup came to, as `invoice_app_reconciled_total`'s `result` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// Charged under its key: now paid, with no second charge.
    Paid,
    /// Nothing under its key: back to where it waits, for the next run to charge.
    Released,
    /// Its key's charge was declined: failed, past due or uncollectible as the decline's
    /// class and the dunning schedule say.
    Declined,
    /// What the key holds is for another request, or the lookup was refused: a person
    /// looks.
    Attention,
    /// No answer yet (in flight, the provider away): looked up again next time.
    Retry,
}

impl Reconciled {
    pub const ALL: [Reconciled; 5] = [
        Reconciled::Paid,
        Reconciled::Released,
        Reconciled::Declined,
        Reconciled::Attention,
        Reconciled::Retry,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reconciled::Paid => "paid",
            Reconciled::Released => "released",
            Reconciled::Declined => "declined",
            Reconciled::Attention => "attention",
            Reconciled::Retry => "retry",
        }
    }

    fn of(settlement: &Settlement) -> Self {
        match settlement {
            Settlement::Paid { .. } => Reconciled::Paid,
            Settlement::Released { .. } => Reconciled::Released,
            Settlement::Failed { .. }
            | Settlement::PastDue { .. }
            | Settlement::Uncollectible { .. } => Reconciled::Declined,
            Settlement::Attention { .. } => Reconciled::Attention,
            Settlement::RetryLater { .. } => Reconciled::Retry,
        }
    }
}

impl Biller {
    /// Opens a reconcile run started by `trigger` (and `started_by`, an API caller), looks
    /// up every waiting invoice that may have been charged, or only the invoice `only` (an
    /// operator's "reconcile it now", whatever its last attempt), settles each from what
    /// the provider holds, and closes the run as a pay run is closed. The report's counts
    /// are the run's row: paid, failed (hard declines, schedules spent) and handed back
    /// (released, past due, attention, no answer yet).
    pub async fn reconcile(
        &self,
        trigger: Trigger,
        started_by: Option<String>,
        only: Option<InvoiceId>,
    ) -> Result<PayRunReport, BillingError> {
        let run = self
            .open_run(RunKind::Reconcile, trigger, started_by)
            .await?;
        let only = only.map(|id| id.as_str().to_owned());
        self.drive(run, Work::Reconcile { only }).await
    }

    /// Claims candidates in id order, a batch at a time, looks each up and settles the
    /// batch. Returns what was settled and why the run stopped early.
    pub(super) async fn look_up_all(
        &self,
        run_id: &RunId,
        only: Option<&str>,
    ) -> (PayRunReport, Option<BillingError>) {
        // An operator's one invoice is reported as it now stands; a sweep by counts.
        let detail = if only.is_some() {
            Detail::Itemised
        } else {
            Detail::Counts
        };
        let concurrency = self.settings.concurrency.max(1);
        let batch = concurrency * 4;
        let mut report = PayRunReport::new(run_id);
        let mut cursor: Option<String> = None;
        loop {
            if self.is_stopping() {
                return (report, Some(BillingError::ShuttingDown));
            }
            let rows = match self
                .claim_lookups(run_id, cursor.clone(), only.map(str::to_owned), batch)
                .await
            {
                Ok(rows) => rows,
                Err(e) => return (report, Some(e)),
            };
            let Some(last) = rows.last() else { break };
            cursor = Some(last.id.clone());
            let looked: Vec<_> = stream::iter(rows)
                .map(|row| self.look_up_one(run_id, row))
                .buffer_unordered(concurrency)
                .collect()
                .await;
            let mut done = Vec::with_capacity(looked.len());
            let mut stopped = None;
            for one in looked {
                match one {
                    Ok(Some(charged)) => done.push(charged),
                    Ok(None) => {}
                    Err(e) => {
                        stopped.get_or_insert(e);
                    }
                }
            }
            // What was looked up is settled even if the run stops: the answers are the
            // provider's. Claims left unsettled are handed back when the run closes failed.
            if !done.is_empty() {
                match self.settle(run_id, done).await {
                    Ok(settled) => {
                        for (invoice, settlement) in settled {
                            self.metrics
                                .reconciled(Reconciled::of(&settlement).as_str());
                            report.add(invoice, settlement, detail);
                        }
                    }
                    Err(e) => return (report, Some(e)),
                }
            }
            if stopped.is_some() {
                return (report, stopped);
            }
            if only.is_some() {
                break;
            }
        }
        (report, None)
    }

    /// Up to `limit` candidates after `after` (or the invoice `only`), claimed for the run.
    async fn claim_lookups(
        &self,
        run_id: &RunId,
        after: Option<String>,
        only: Option<String>,
        limit: usize,
    ) -> Result<Vec<invoices::InvoiceRow>, BillingError> {
        let lease = TimeDelta::from_std(self.settings.lease).unwrap_or(TimeDelta::MAX);
        let limit = i64::try_from(limit).unwrap_or(64);
        let (worker, run) = (self.worker_id.clone(), run_id.clone());
        let claimed = db::run(&self.pool, move |c| {
            // A run closed as abandoned while this process stalled claims nothing more.
            if !pay_runs::is_running(c, &run)? {
                return Ok(None);
            }
            let now = db::clock::now();
            invoices::claim_lookups(
                c,
                invoices::Holder {
                    worker: &worker,
                    run: &run,
                },
                invoices::Lookups {
                    after: after.as_deref(),
                    only: only.as_deref(),
                },
                now,
                now + lease,
                limit,
            )
            .map(Some)
        })
        .await?
        .ok_or(BillingError::RunClosed)?;
        Ok(claimed.rows)
    }

    /// Looks `row` up once under its current key. `None` when another worker took it over
    /// before the call: this run leaves it alone.
    #[tracing::instrument(name = "reconcile_invoice", skip_all, fields(invoice_id = %row.id))]
    async fn look_up_one(
        &self,
        run_id: &RunId,
        row: invoices::InvoiceRow,
    ) -> Result<Option<Charged>, BillingError> {
        let key = match idempotency_key_for(&row.id, row.attempt_count) {
            Ok(key) => key,
            // Never sent either: nothing can be under it, but a person must see why.
            Err(reason) => {
                let settlement = Settlement::Attention {
                    reason: format!("reconciliation: the invoice has no valid key: {reason}"),
                };
                return Ok(Some(Charged {
                    row,
                    settlement,
                    last: None,
                }));
            }
        };
        let Some(attempt_id) = self
            .begin_attempt(run_id, &row, &key, AttemptKind::Lookup)
            .await?
        else {
            tracing::info!("claim taken over by another worker; not looking up");
            return Ok(None);
        };
        let looked = self.client.lookup(&key).await;
        let (settlement, record) = judge(
            &row,
            &key,
            attempt_id,
            looked,
            &self.settings.dunning,
            db::clock::now(),
        );
        tracing::info!(result = Reconciled::of(&settlement).as_str(), "looked up");
        Ok(Some(Charged {
            row,
            settlement,
            last: Some(record),
        }))
    }
}

/// What the provider's answer to the lookup of `row`'s `key` settles it as, at `now`, and
/// what the lookup's attempt records.
fn judge(
    row: &invoices::InvoiceRow,
    key: &IdempotencyKey,
    attempt_id: AttemptId,
    looked: LookupResult,
    schedule: &DunningSchedule,
    now: NaiveDateTime,
) -> (Settlement, attempts::Finished) {
    let outcome = match looked.outcome {
        LookupOutcome::NotFound => {
            let reason = format!(
                "reconciliation: payment-provider holds nothing under key {}; the next run \
                 charges it",
                key.as_str()
            );
            let record = attempts::Finished {
                attempt_id,
                outcome: AttemptOutcome::NotFound,
                sent: looked.sent,
                http_status: looked.http_status,
                detail: Some(reason.clone()),
                charge_id: None,
                provider_code: None,
            };
            return (Settlement::Released { reason }, record);
        }
        LookupOutcome::Answer(outcome) => outcome,
    };
    let mut record = call_record(attempt_id, &outcome, looked.sent, looked.http_status);
    if let CallOutcome::Succeeded { charge, .. } = &outcome
        && !charges(charge, row)
    {
        // Money moved under this invoice's key, but not this invoice's charge: paying it
        // with that charge, or charging again, would both be guesses.
        let reason = format!(
            "reconciliation: key {} holds charge {} of {} for invoice {} of customer {}, not \
             this invoice's {} {} of customer {}; check it with payment-provider",
            key.as_str(),
            charge.id,
            charge.amount,
            charge.invoice_id.as_str(),
            charge.customer_id.as_str(),
            row.amount_minor,
            row.currency,
            row.customer_id,
        );
        record.outcome = AttemptOutcome::Attention;
        record.detail = Some(reason.clone());
        return (Settlement::Attention { reason }, record);
    }
    let settlement = match verdict(outcome, row, schedule, now) {
        Verdict::Settle(Settlement::Attention { reason }) => Settlement::Attention {
            reason: format!("reconciliation: {reason}"),
        },
        Verdict::Settle(settlement) => settlement,
        Verdict::Transient { reason, .. } => Settlement::RetryLater {
            reason: format!("reconciliation: {reason}; looked up again next time"),
        },
    };
    (settlement, record)
}

/// Whether `charge` is the charge of `row`: its invoice, customer and amount.
fn charges(charge: &ChargeResponse, row: &invoices::InvoiceRow) -> bool {
    charge.invoice_id.as_str() == row.id
        && charge.customer_id.as_str() == row.customer_id
        && charge.amount.minor_units() == row.amount_minor
        && charge.amount.currency().code() == row.currency
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{InvoiceStatus, Sent};
    use api_contract::{ChargeStatus, Currency, CustomerId, DeclineClass, ErrorCode, Money};

    fn at(day: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_796_083_200 + day * 86_400, 0)
            .expect("a time")
            .naive_utc()
    }

    fn row() -> invoices::InvoiceRow {
        invoices::InvoiceRow {
            id: "inv-1".into(),
            customer_id: "C001".into(),
            amount_minor: 1215,
            currency: "EUR".into(),
            description: String::new(),
            status: InvoiceStatus::Processing,
            failure_reason: None,
            charge_id: None,
            claimed_by: None,
            lease_until: None,
            last_run_id: None,
            created_at: at(0),
            updated_at: at(0),
            paid_at: None,
            attention: Some("HTTP 422 idempotency_key_reused".into()),
            created_by: None,
            attempt_count: 0,
            past_due_since: None,
            next_attempt_at: None,
        }
    }

    fn charge(invoice: &str, minor: i64) -> ChargeResponse {
        ChargeResponse {
            id: "ch_1".into(),
            status: ChargeStatus::Succeeded,
            invoice_id: InvoiceId::parse(invoice).expect("id"),
            customer_id: CustomerId::parse("C001").expect("id"),
            amount: Money::new(minor, Currency::Eur).expect("amount"),
            created_at: "2026-12-01T00:00:00.000Z".into(),
        }
    }

    fn judged(outcome: LookupOutcome) -> (Settlement, attempts::Finished) {
        let key = idempotency_key_for("inv-1", 0).expect("key");
        let looked = LookupResult {
            outcome,
            http_status: Some(200),
            sent: Sent::Yes,
        };
        judge(
            &row(),
            &key,
            AttemptId::generate(),
            looked,
            &DunningSchedule::default(),
            at(1),
        )
    }

    fn found(charge: ChargeResponse) -> LookupOutcome {
        LookupOutcome::Answer(CallOutcome::Succeeded {
            charge,
            replayed: true,
        })
    }

    /// Each answer of the provider, and what it settles the invoice as.
    #[test]
    fn what_each_answer_settles() {
        let (paid, record) = judged(found(charge("inv-1", 1215)));
        assert_eq!(
            paid,
            Settlement::Paid {
                charge_id: "ch_1".into()
            }
        );
        assert_eq!(record.outcome, AttemptOutcome::Succeeded);
        assert_eq!(record.charge_id.as_deref(), Some("ch_1"));

        let (released, record) = judged(LookupOutcome::NotFound);
        assert!(
            matches!(released, Settlement::Released { .. }),
            "{released:?}"
        );
        assert_eq!(record.outcome, AttemptOutcome::NotFound);
        assert_eq!(Reconciled::of(&released), Reconciled::Released);

        let declined = |code, class| {
            judged(LookupOutcome::Answer(CallOutcome::Declined {
                code,
                class,
                detail: "d".into(),
            }))
            .0
        };
        assert!(matches!(
            declined(ErrorCode::InsufficientFunds, DeclineClass::Soft),
            Settlement::PastDue {
                attempt_count: 1,
                ..
            }
        ));
        assert!(matches!(
            declined(ErrorCode::AccountClosed, DeclineClass::Hard),
            Settlement::Failed { .. }
        ));

        let (later, record) = judged(LookupOutcome::Answer(CallOutcome::Retryable {
            reason: "HTTP 409".into(),
            retry_after: None,
        }));
        assert!(matches!(later, Settlement::RetryLater { .. }), "{later:?}");
        assert_eq!(record.outcome, AttemptOutcome::Retryable);
        assert_eq!(Reconciled::of(&later), Reconciled::Retry);
    }

    /// A charge under the key for another amount or invoice is never taken for this
    /// invoice's payment: attention, saying what was found.
    #[test]
    fn a_charge_for_another_request_needs_a_person() {
        for other in [charge("inv-1", 1000), charge("inv-2", 1215)] {
            let (settlement, record) = judged(found(other));
            let Settlement::Attention { reason } = &settlement else {
                panic!("attention expected, got {settlement:?}");
            };
            assert!(reason.contains("ch_1"), "{reason}");
            assert_eq!(record.outcome, AttemptOutcome::Attention);
            assert_eq!(record.charge_id.as_deref(), Some("ch_1"));
        }
        let Settlement::Attention { reason } = judged(found(charge("inv-1", 1000))).0 else {
            unreachable!()
        };
        assert!(reason.contains("10.00 EUR"), "{reason}");
    }
}
