//! Paying invoices: pay runs claim pending invoices in batches, charge each at the provider
//! with retries (every attempt recorded), and settle it as paid, failed or back to pending.

mod pay_one;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use futures_util::{StreamExt, stream};
use tokio::sync::mpsc;

use crate::db::{self, DbError, DbPool, attempts, invoices, pay_runs};
use crate::domain::{Invoice, Settlement};
use crate::metrics::Metrics;
use crate::payment_client::PaymentClient;

#[derive(Debug, Clone)]
pub struct PaySettings {
    /// Charges in flight at once.
    pub concurrency: usize,
    /// How long a claim stays ours; longer than one invoice's whole retry budget.
    pub lease: Duration,
    /// Retry budget of one invoice within a run.
    pub retry_max_elapsed: Duration,
    /// Runs this process pays at once; more are refused until one ends, so a flood of
    /// pay requests cannot pile up background work.
    pub max_runs: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Api,
    Schedule,
    Cli,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Schedule => "schedule",
            Trigger::Cli => "cli",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RetryLater {
    pub invoice_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub paid: usize,
    pub failed: usize,
    pub retry_later: usize,
}

/// What a run did: the counts, and invoice by invoice when asked for (`itemise`), since a
/// run of a million invoices should not hold them all in memory to say "done".
#[derive(Debug, Clone, Default)]
pub struct PayRunReport {
    pub run_id: String,
    pub summary: Summary,
    pub paid: Vec<Invoice>,
    pub failed: Vec<Invoice>,
    pub retry_later: Vec<RetryLater>,
}

impl PayRunReport {
    fn add(&mut self, invoice: Invoice, settlement: Settlement, itemise: bool) {
        match settlement {
            Settlement::Paid { .. } => {
                self.summary.paid += 1;
                if itemise {
                    self.paid.push(invoice);
                }
            }
            Settlement::Failed { .. } => {
                self.summary.failed += 1;
                if itemise {
                    self.failed.push(invoice);
                }
            }
            Settlement::RetryLater { reason } => {
                self.summary.retry_later += 1;
                if itemise {
                    self.retry_later.push(RetryLater {
                        invoice_id: invoice.id,
                        reason,
                    });
                }
            }
        }
    }
}

/// A run that holds one of the process's run slots until it is dropped.
pub struct OpenRun {
    pub row: pay_runs::PayRunRow,
    _slot: RunSlot,
}

struct RunSlot(Arc<AtomicUsize>);

impl Drop for RunSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("shutting down")]
    ShuttingDown,
    #[error("{0} pay runs are in progress already")]
    Busy(usize),
    #[error("stored invoice does not parse: {0}")]
    Corrupt(String),
    #[error("pay run task ended: {0}")]
    Aborted(String),
}

pub struct Biller {
    pool: DbPool,
    client: PaymentClient,
    settings: PaySettings,
    metrics: Metrics,
    /// Names this process's claims: host name plus a random suffix.
    worker_id: String,
    stopping: AtomicBool,
    /// Runs opened and not yet finished (see [`OpenRun`]).
    active_runs: Arc<AtomicUsize>,
    /// The process's main runtime: runs outlive the HTTP worker that started them.
    runtime: tokio::runtime::Handle,
}

impl Biller {
    pub fn new(
        pool: DbPool,
        client: PaymentClient,
        settings: PaySettings,
        metrics: Metrics,
    ) -> Arc<Self> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "invoice-app".to_owned());
        Arc::new(Biller {
            pool,
            client,
            settings,
            metrics,
            worker_id: format!("{host}-{}", uuid::Uuid::new_v4().simple()),
            stopping: AtomicBool::new(false),
            active_runs: Arc::new(AtomicUsize::new(0)),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Takes a run slot and records a new run, without paying anything yet. `started_by`
    /// is the API caller, for the audit trail.
    pub async fn open_run(
        &self,
        trigger: Trigger,
        started_by: Option<String>,
    ) -> Result<OpenRun, BillingError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(BillingError::ShuttingDown);
        }
        let max = self.settings.max_runs;
        self.active_runs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| BillingError::Busy(max))?;
        let slot = RunSlot(self.active_runs.clone());
        let run = pay_runs::PayRunRow {
            id: uuid::Uuid::now_v7().to_string(),
            trigger: trigger.as_str().to_owned(),
            status: "running".to_owned(),
            paid: 0,
            failed: 0,
            retry_later: 0,
            error: None,
            started_at: Utc::now().naive_utc(),
            finished_at: None,
            started_by,
        };
        let row = run.clone();
        db::run(&self.pool, move |c| {
            pay_runs::insert(c, &row).map_err(DbError::from)
        })
        .await?;
        Ok(OpenRun {
            row: run,
            _slot: slot,
        })
    }

    /// Opens a run and pays every pending invoice.
    pub async fn pay_all(
        &self,
        trigger: Trigger,
        itemise: bool,
    ) -> Result<PayRunReport, BillingError> {
        let run = self.open_run(trigger, None).await?;
        self.pay(run, itemise).await
    }

    /// Starts paying `run` on the main runtime at once; await the result or drop it.
    pub fn spawn_pay(
        self: &Arc<Self>,
        run: OpenRun,
        itemise: bool,
    ) -> impl std::future::Future<Output = Result<PayRunReport, BillingError>> + use<> {
        let biller = self.clone();
        let task = self
            .runtime
            .spawn(async move { biller.pay(run, itemise).await });
        async move {
            task.await
                .map_err(|e| BillingError::Aborted(e.to_string()))?
        }
    }

    /// Pays every invoice claimable now, batch after batch, and closes the run; its slot
    /// is free again by the time the run is recorded as finished.
    #[tracing::instrument(name = "pay_run", skip_all, fields(run_id = %open.row.id, trigger = %open.row.trigger))]
    pub async fn pay(&self, open: OpenRun, itemise: bool) -> Result<PayRunReport, BillingError> {
        let OpenRun {
            row: mut run,
            _slot: slot,
        } = open;
        let started = Instant::now();
        let result = self.pay_batches(&run.id, itemise).await;
        // Free before the run shows as finished, so whoever sees it finished may start one.
        drop(slot);
        self.metrics
            .observe_pay_run(started.elapsed().as_secs_f64());

        run.finished_at = Some(Utc::now().naive_utc());
        match &result {
            Ok(report) => {
                run.status = "completed".to_owned();
                run.paid = count(report.summary.paid);
                run.failed = count(report.summary.failed);
                run.retry_later = count(report.summary.retry_later);
                tracing::info!(
                    paid = run.paid,
                    failed = run.failed,
                    retry_later = run.retry_later,
                    "pay run finished"
                );
            }
            Err(e) => {
                run.status = "failed".to_owned();
                run.error = Some(e.to_string());
                tracing::error!(error = %e, "pay run failed");
            }
        }
        let row = run.clone();
        db::run(&self.pool, move |c| {
            pay_runs::finish(c, &row).map_err(DbError::from)
        })
        .await?;
        result.map(|mut report| {
            report.run_id = run.id;
            report
        })
    }

    /// Pays in a pipeline, so the provider is never left idle while this side writes: one
    /// task claims batches (one batch ahead), one keeps `concurrency` charges in flight
    /// across batch boundaries, and one settles whatever has been charged, in one
    /// transaction per call. A failed claim stops new work but what is in flight is still
    /// settled; a failed settlement stops the run.
    async fn pay_batches(&self, run_id: &str, itemise: bool) -> Result<PayRunReport, BillingError> {
        let concurrency = self.settings.concurrency.max(1);
        let batch = concurrency * 4;
        let (claimed_tx, claimed_rx) = mpsc::channel::<Vec<(invoices::InvoiceRow, String)>>(1);
        let (charged_tx, mut charged_rx) = mpsc::channel::<pay_one::Charged>(batch);

        let claimer = async move {
            let mut cursor: Option<String> = None;
            while !self.stopping.load(Ordering::SeqCst) {
                let (rows, next) = self.claim_batch(run_id, cursor.clone(), batch).await?;
                if rows.is_empty() {
                    break;
                }
                cursor = next.or(cursor);
                if claimed_tx.send(rows).await.is_err() {
                    break; // the charger stopped: the run is failing already
                }
            }
            Ok::<_, BillingError>(())
        };

        let charger = async move {
            let claimed = stream::unfold(claimed_rx, |mut rx| async move {
                rx.recv().await.map(|rows| (stream::iter(rows), rx))
            });
            let mut charged = std::pin::pin!(
                claimed
                    .flatten()
                    .map(|(row, attempt)| self.pay_one(run_id, row, attempt))
                    .buffer_unordered(concurrency)
            );
            while let Some(one) = charged.next().await {
                if charged_tx.send(one?).await.is_err() {
                    break; // the settler stopped on an error of its own
                }
            }
            Ok::<_, BillingError>(())
        };

        let settler = async move {
            let mut report = PayRunReport::default();
            let mut ready = Vec::with_capacity(batch);
            while charged_rx.recv_many(&mut ready, batch).await > 0 {
                for (invoice, settlement) in self.settle_all(std::mem::take(&mut ready)).await? {
                    report.add(invoice, settlement, itemise);
                }
            }
            Ok::<_, BillingError>(report)
        };

        let (claimed, charged, settled) = tokio::join!(claimer, charger, settler);
        let report = settled?;
        charged?;
        claimed?;
        Ok(report)
    }

    /// Claims up to `limit` invoices for this run and records the first attempt of each,
    /// all before any call is made. Returns them with their attempt ids and the cursor.
    async fn claim_batch(
        &self,
        run_id: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<(invoices::InvoiceRow, String)>, Option<String>), BillingError> {
        let lease = TimeDelta::from_std(self.settings.lease).unwrap_or(TimeDelta::MAX);
        let limit = i64::try_from(limit).unwrap_or(64);
        let (worker, run) = (self.worker_id.clone(), run_id.to_owned());
        let claimed = db::run(&self.pool, move |c| {
            let now = Utc::now().naive_utc();
            invoices::claim(c, &worker, &run, after.as_deref(), now, now + lease, limit)
                .map_err(DbError::from)
        })
        .await?;
        if claimed.rows.is_empty() {
            return Ok((Vec::new(), claimed.cursor));
        }
        let first: Vec<attempts::AttemptRow> = claimed
            .rows
            .iter()
            .map(|row| pay_one::new_attempt(run_id, row))
            .collect();
        let ids: Vec<String> = first.iter().map(|a| a.id.clone()).collect();
        db::run(&self.pool, move |c| {
            attempts::start_all(c, &first).map_err(DbError::from)
        })
        .await?;
        Ok((claimed.rows.into_iter().zip(ids).collect(), claimed.cursor))
    }

    /// Stops starting new work, waits up to `grace` for runs in progress, then hands back
    /// any claim still held so another replica can take it at once.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        while self.active_runs.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let worker = self.worker_id.clone();
        let released = db::run(&self.pool, move |c| {
            invoices::release_all(c, &worker, Utc::now().naive_utc()).map_err(DbError::from)
        })
        .await;
        match released {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "handed back claims on shutdown"),
            Err(e) => {
                tracing::warn!(error = %e, "could not hand back claims; their leases will expire")
            }
        }
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
