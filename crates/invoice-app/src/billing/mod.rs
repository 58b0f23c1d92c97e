//! Paying invoices: pay runs claim pending invoices in batches, charge each at the provider
//! with retries (every attempt recorded), and settle it as paid, failed or back to pending.
//! A run's row is kept true throughout: counts written with the rows they count, a
//! heartbeat while it works, and `abandoned` when its process died.

mod pay_one;
mod periods;
mod reconcile;
mod retry;
mod settle;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use diesel::Connection;
use futures_util::{StreamExt, stream};
use tokio::sync::mpsc;

use crate::db::{self, DbError, DbPool, attempts, invoices, pay_runs};
use crate::domain::{
    DunningSchedule, Invoice, RunId, RunKind, RunResult, RunStatus, Settlement, WorkerId,
};
pub use crate::domain::{Summary, Trigger};
use crate::metrics::Metrics;
use crate::payment_client::PaymentClient;
pub use periods::Cadence;
pub use reconcile::Reconciled;
pub use retry::RetryNow;

#[derive(Debug, Clone)]
pub struct PaySettings {
    /// Charges in flight at once.
    pub concurrency: usize,
    /// How long a claim stays ours from the start of a call; longer than the retry budget
    /// plus a call's timeout (see `config`).
    pub lease: Duration,
    /// Retry budget of one invoice within a run.
    pub retry_max_elapsed: Duration,
    /// Runs this process pays at once; more are refused until one ends, so a flood of
    /// pay requests cannot pile up background work.
    pub max_runs: usize,
    /// When a soft-declined invoice is tried again.
    pub dunning: DunningSchedule,
}

#[derive(Debug, Clone)]
pub struct RetryLater {
    pub invoice_id: api_contract::InvoiceId,
    pub reason: String,
}

/// How much a report says: a run of a million invoices should not hold them all in memory
/// to say "done".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    Counts,
    /// Every invoice the run changed, as it now stands.
    Itemised,
}

/// What a run did: exactly the invoices whose rows it changed (the same counts its row
/// holds), invoice by invoice when asked for.
#[derive(Debug, Clone)]
pub struct PayRunReport {
    pub run_id: RunId,
    pub status: RunStatus,
    /// Why the run stopped, when it failed.
    pub error: Option<String>,
    pub summary: Summary,
    pub paid: Vec<Invoice>,
    pub failed: Vec<Invoice>,
    pub retry_later: Vec<RetryLater>,
}

impl PayRunReport {
    fn new(run_id: &RunId) -> Self {
        PayRunReport {
            run_id: run_id.clone(),
            status: RunStatus::Running,
            error: None,
            summary: Summary::default(),
            paid: Vec::new(),
            failed: Vec::new(),
            retry_later: Vec::new(),
        }
    }

    fn add(&mut self, invoice: Invoice, settlement: Settlement, detail: Detail) {
        let result = settlement.transition().counts_as;
        self.summary.add(result, 1);
        if detail == Detail::Counts {
            return;
        }
        match result {
            RunResult::Paid => self.paid.push(invoice),
            RunResult::Failed => self.failed.push(invoice),
            RunResult::RetryLater => self.retry_later.push(RetryLater {
                invoice_id: invoice.id,
                reason: settlement.reason().unwrap_or_default().to_owned(),
            }),
        }
    }
}

/// What a run does between its opening and its close.
enum Work {
    /// Charges what `Source` gives (a pay or dunning run's claims, an operator's retry).
    Pay(Source, Detail),
    /// Looks invoices that may have been charged up at the provider: those it finds, or the
    /// one invoice an operator named.
    Reconcile { only: Option<String> },
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
    #[error(
        "the process is shutting down: it stopped claiming invoices (the next run takes the rest)"
    )]
    ShuttingDown,
    #[error("{0} pay runs are in progress already")]
    Busy(usize),
    #[error("stored invoice does not parse: {0}")]
    Corrupt(String),
    #[error("pay run task ended: {0}")]
    Aborted(String),
    #[error("the run was closed as abandoned while it worked (its process stalled); it stopped")]
    RunClosed,
    /// A run paid through the API stopped before it was done.
    #[error(transparent)]
    Stopped(Box<Stopped>),
}

/// A run that stopped before it was done: its row holds what it settled.
#[derive(Debug, thiserror::Error)]
#[error(
    "pay run {run_id} stopped after {} paid, {} failed and {} handed back: {error}",
    summary.paid, summary.failed, summary.retry_later
)]
pub struct Stopped {
    pub run_id: RunId,
    pub summary: Summary,
    pub error: String,
}

pub struct Biller {
    pool: DbPool,
    client: PaymentClient,
    settings: PaySettings,
    metrics: Metrics,
    /// Names this process's claims and runs: host name plus a random suffix.
    worker_id: WorkerId,
    /// Set once the process is stopping: no new run, claim or call starts, and retry
    /// waits end at once.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Runs opened and not yet finished (see [`OpenRun`]).
    active_runs: Arc<AtomicUsize>,
    /// This process's runs whose end could not be written yet and is being retried in the
    /// background: housekeeping must not take them for runs whose process died.
    closing: Arc<Mutex<HashSet<RunId>>>,
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
            worker_id: WorkerId::new(&host),
            stopping: tokio::sync::watch::Sender::new(false),
            active_runs: Arc::new(AtomicUsize::new(0)),
            closing: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Takes a run slot and records a new run, without paying anything yet. `started_by`
    /// is the API caller, for the audit trail.
    pub async fn open_run(
        &self,
        kind: RunKind,
        trigger: Trigger,
        started_by: Option<String>,
    ) -> Result<OpenRun, BillingError> {
        let slot = self.take_slot()?;
        // Whoever notices first closes the runs of processes that died. Housekeeping only:
        // a run it cannot close now (locked by a frozen peer; waits are bounded by the
        // session's lock timeout) does not keep this one from starting.
        if let Err(e) = self.close_abandoned().await {
            tracing::warn!(error = %e, "could not close abandoned pay runs; the next run tries again");
        }
        let row = self.new_run_row(kind, trigger, started_by);
        let stored = row.clone();
        db::run(&self.pool, move |c| pay_runs::insert(c, &stored)).await?;
        Ok(OpenRun { row, _slot: slot })
    }

    fn take_slot(&self) -> Result<RunSlot, BillingError> {
        if self.is_stopping() {
            return Err(BillingError::ShuttingDown);
        }
        let max = self.settings.max_runs;
        self.active_runs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| BillingError::Busy(max))?;
        Ok(RunSlot(self.active_runs.clone()))
    }

    fn new_run_row(
        &self,
        kind: RunKind,
        trigger: Trigger,
        started_by: Option<String>,
    ) -> pay_runs::PayRunRow {
        let now = db::clock::now();
        pay_runs::PayRunRow {
            id: RunId::generate(),
            trigger,
            status: RunStatus::Running,
            paid: 0,
            failed: 0,
            retry_later: 0,
            error: None,
            started_at: now,
            finished_at: None,
            worker_id: Some(self.worker_id.clone()),
            heartbeat_at: Some(now),
            started_by,
            kind,
        }
    }

    /// Opens a run of `kind` (a pay run, or the past-due retries of a dunning run) and
    /// pays what it can claim.
    pub async fn pay_all(
        &self,
        kind: RunKind,
        trigger: Trigger,
        detail: Detail,
    ) -> Result<PayRunReport, BillingError> {
        let run = self.open_run(kind, trigger, None).await?;
        self.pay(run, detail).await
    }

    /// Pays every pending invoice in a run of its own, started through the API by
    /// `started_by`, and reports when done; a run that stopped early is
    /// [`BillingError::Stopped`]. The run goes on if the caller goes away.
    pub async fn pay_now(
        self: &Arc<Self>,
        started_by: String,
        detail: Detail,
    ) -> Result<PayRunReport, BillingError> {
        let run = self
            .open_run(RunKind::Pay, Trigger::Api, Some(started_by))
            .await?;
        let report = self.spawn_pay(run, detail).await?;
        match report.error {
            None => Ok(report),
            Some(error) => Err(BillingError::Stopped(Box::new(Stopped {
                run_id: report.run_id,
                summary: report.summary,
                error,
            }))),
        }
    }

    /// Starts a run in the background, started through the API by `started_by`; its id.
    pub async fn start(self: &Arc<Self>, started_by: String) -> Result<RunId, BillingError> {
        let run = self
            .open_run(RunKind::Pay, Trigger::Api, Some(started_by))
            .await?;
        let id = run.row.id.clone();
        drop(self.spawn_pay(run, Detail::Counts));
        Ok(id)
    }

    /// Starts paying `run` on the main runtime at once; await the result or drop it.
    pub fn spawn_pay(
        self: &Arc<Self>,
        run: OpenRun,
        detail: Detail,
    ) -> impl std::future::Future<Output = Result<PayRunReport, BillingError>> + use<> {
        self.spawn_pay_from(run, Source::Claims, detail)
    }

    /// [`Biller::spawn_pay`] of what `source` gives.
    fn spawn_pay_from(
        self: &Arc<Self>,
        run: OpenRun,
        source: Source,
        detail: Detail,
    ) -> impl std::future::Future<Output = Result<PayRunReport, BillingError>> + use<> {
        let biller = self.clone();
        let task = self
            .runtime
            .spawn(async move { biller.drive(run, Work::Pay(source, detail)).await });
        async move {
            task.await
                .map_err(|e| BillingError::Aborted(e.to_string()))?
        }
    }

    /// Pays every invoice claimable now and closes the run, `completed` or `failed`; its
    /// slot is free again by the time the run is recorded as finished. A failed run's
    /// report still holds everything it settled.
    pub async fn pay(&self, open: OpenRun, detail: Detail) -> Result<PayRunReport, BillingError> {
        self.drive(open, Work::Pay(Source::Claims, detail)).await
    }

    /// Does a run's `work` with a heartbeat, then closes it as [`Self::pay`] says.
    #[tracing::instrument(name = "pay_run", skip_all, fields(run_id = %open.row.id, trigger = open.row.trigger.as_str(), kind = open.row.kind.as_str()))]
    async fn drive(&self, open: OpenRun, work: Work) -> Result<PayRunReport, BillingError> {
        let OpenRun {
            row: run,
            _slot: slot,
        } = open;
        let started = Instant::now();
        let work = async {
            match work {
                Work::Pay(source, detail) => self.pipeline(&run.id, run.kind, source, detail).await,
                Work::Reconcile { only } => self.look_up_all(&run.id, only.as_deref()).await,
            }
        };
        let (mut report, stopped) = tokio::select! {
            done = work => done,
            never = self.heartbeat(&run.id) => match never {},
        };
        // Free before the run shows as finished, so whoever sees it finished may start one.
        drop(slot);
        self.metrics
            .observe_pay_run(started.elapsed().as_secs_f64());
        report.status = match &stopped {
            None => RunStatus::Completed,
            Some(_) => RunStatus::Failed,
        };
        report.error = stopped.map(|e| e.to_string());
        match &report.error {
            None => tracing::info!(summary = ?report.summary, "pay run finished"),
            Some(error) => tracing::error!(%error, summary = ?report.summary, "pay run failed"),
        }
        let closed = match self.close_run(&run.id, &report).await {
            Ok(Closed::Finished { handed_back }) => {
                report
                    .summary
                    .add(RunResult::RetryLater, to_count(handed_back));
                false
            }
            Ok(Closed::ByAnother) => true,
            Err(e) => {
                // The database is away for longer than those tries: the row still says
                // running. Writing it goes on in the background until the database is back
                // (the claims handed back then), and until then housekeeping leaves it
                // alone: this process is alive and knows how its run ended.
                tracing::error!(error = %e, run_id = %run.id, "could not record the end of the pay run; trying on in the background");
                report.status = RunStatus::Failed;
                let why = report
                    .error
                    .take()
                    .unwrap_or_else(|| "it finished".to_owned());
                report.error = Some(format!(
                    "{why}; recording the run's end failed ({e}) and is retried in the \
                     background"
                ));
                self.close_later(run.id.clone(), report.error.clone());
                return Ok(report);
            }
        };
        if closed {
            report.status = RunStatus::Abandoned;
            // Closed by this process's own shutdown (its grace ran out) or by another
            // replica that saw it stall: either way the run did not finish, and says why.
            let why = if self.is_stopping() {
                "the process is shutting down: its grace ran out with calls in flight, which \
                 were handed back (the next run replays their keys)"
                    .to_owned()
            } else {
                BillingError::RunClosed.to_string()
            };
            report.error.get_or_insert(why);
        }
        Ok(report)
    }

    /// Records the run's end as `report` says. A failed run hands back the claims it still
    /// holds (the invoices it claimed and did not settle, called or not: the next run
    /// replays their keys), counted as handed back. Tried a few times, each on a connection
    /// that works (a failed call discards a dead one): a run whose database connections
    /// were cut is still recorded as failed, not left running for housekeeping to call
    /// dead.
    async fn close_run(&self, run_id: &RunId, report: &PayRunReport) -> Result<Closed, DbError> {
        let mut wait = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            let closed = write_close(
                &self.pool,
                &self.worker_id,
                run_id,
                report.status,
                report.error.clone(),
            )
            .await;
            tries += 1;
            match closed {
                Ok(closed) => return Ok(closed),
                Err(e) if tries >= CLOSE_TRIES => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "recording the end of the pay run failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }

    /// Records the failed run's end once the database is back, retrying with a growing
    /// pause (at most a quarter lease); the run stays in `closing` meanwhile.
    fn close_later(&self, run_id: RunId, error: Option<String>) {
        lock(&self.closing).insert(run_id.clone());
        let (pool, worker, closing) = (
            self.pool.clone(),
            self.worker_id.clone(),
            self.closing.clone(),
        );
        let most = (self.settings.lease / 4).max(Duration::from_secs(1));
        self.runtime.spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                tokio::time::sleep(wait).await;
                let closed =
                    write_close(&pool, &worker, &run_id, RunStatus::Failed, error.clone()).await;
                match closed {
                    Ok(Closed::Finished { handed_back }) => {
                        tracing::info!(run_id = %run_id, handed_back, "recorded the end of the pay run");
                        break;
                    }
                    Ok(Closed::ByAnother) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, run_id = %run_id, "recording the end of the pay run failed; trying again");
                        wait = (wait * 2).min(most);
                    }
                }
            }
            lock(&closing).remove(&run_id);
        });
    }

    /// Waits until the ends of this process's runs that are being written in the background
    /// are written, for at most `within`: a process about to exit (the CronJob's) would
    /// otherwise leave them `running` with their claims. Whether all were written.
    pub async fn finish_closing(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !lock(&self.closing).is_empty() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        true
    }

    /// Shows the run alive while it works, so one whose process died can be told apart.
    async fn heartbeat(&self, run_id: &RunId) -> std::convert::Infallible {
        let every = (self.settings.lease / 4).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            let id = run_id.clone();
            let beat = db::run(&self.pool, move |c| {
                pay_runs::heartbeat(c, &id, db::clock::now())
            })
            .await;
            if let Err(e) = beat {
                tracing::warn!(error = %e, "could not record the run's heartbeat");
            }
        }
    }

    /// Pays in a pipeline, so the provider is never left idle while this side writes: one
    /// task claims batches (one batch ahead), one keeps `concurrency` charges in flight
    /// across batch boundaries, and one settles whatever has been charged, a group per
    /// transaction. A failed claim stops new work but what is in flight is still settled; a
    /// failed settlement stops the run. Returns what was settled and why it stopped early.
    async fn pipeline(
        &self,
        run_id: &RunId,
        kind: RunKind,
        source: Source,
        detail: Detail,
    ) -> (PayRunReport, Option<BillingError>) {
        let concurrency = self.settings.concurrency.max(1);
        let batch = concurrency * 4;
        let (claimed_tx, claimed_rx) = mpsc::channel::<Vec<invoices::InvoiceRow>>(1);
        let (charged_tx, mut charged_rx) = mpsc::channel::<pay_one::Charged>(batch);

        let claimer = async move {
            if let Source::Given(rows) = source {
                // Claimed for the run already; it takes nothing else, and waits for no other
                // run's claims. A send that fails finds the charger stopped.
                let _ = claimed_tx.send(rows).await;
                return Ok(());
            }
            let mut cursor: Option<String> = None;
            // Past the end once: from then on the claims look behind the cursor too.
            let mut again = false;
            let mut waited = false;
            loop {
                // Stopped before every invoice was tried: the run must not read completed.
                if self.is_stopping() {
                    return Err(BillingError::ShuttingDown);
                }
                let (rows, next) = self
                    .claim_batch(run_id, kind, cursor.clone(), batch, again)
                    .await?;
                if rows.is_empty() {
                    if cursor.is_some() {
                        // Another run that failed or stopped may have handed invoices back
                        // behind the cursor: one more pass from the start before finishing.
                        (cursor, again) = (None, true);
                        continue;
                    }
                    // Other runs still hold claims: a live one settles them, a dead one's
                    // lapse and are taken here. Completing now could leave some untried.
                    match self.next_lapse_of_others(run_id).await? {
                        Some(wait) => {
                            if !waited {
                                tracing::info!("waiting for the claims other runs hold");
                                waited = true;
                            }
                            self.sleep_unless_stopping(wait).await;
                            again = true;
                            continue;
                        }
                        None => break,
                    }
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
                    .map(|row| self.pay_one(run_id, row))
                    .buffer_unordered(concurrency)
            );
            // Whether the process's stop left an invoice of this run unpaid and unfailed (not
            // called, or between retries): then the run did not complete.
            let mut cut_short = false;
            while let Some(one) = charged.next().await {
                let one = one?;
                if self.is_stopping()
                    && !one.as_ref().is_some_and(|c| {
                        c.settlement.transition().counts_as != RunResult::RetryLater
                    })
                {
                    cut_short = true;
                }
                let Some(one) = one else { continue };
                if charged_tx.send(one).await.is_err() {
                    break; // the settler stopped on an error of its own
                }
            }
            Ok::<_, BillingError>(cut_short)
        };

        let settler = async move {
            let mut report = PayRunReport::new(run_id);
            let mut ready = Vec::with_capacity(batch);
            while charged_rx.recv_many(&mut ready, batch).await > 0 {
                match self.settle(run_id, std::mem::take(&mut ready)).await {
                    Ok(settled) => {
                        for (invoice, settlement) in settled {
                            report.add(invoice, settlement, detail);
                        }
                    }
                    Err(e) => return (report, Some(e)),
                }
            }
            (report, None)
        };

        let (claimed, charged, (report, settled)) = tokio::join!(claimer, charger, settler);
        let cut_short = match charged {
            Ok(true) => Some(BillingError::ShuttingDown),
            Ok(false) => None,
            Err(e) => Some(e),
        };
        (report, settled.or(cut_short).or(claimed.err()))
    }

    /// Claims up to `limit` invoices for this run. Returns them and the cursor.
    async fn claim_batch(
        &self,
        run_id: &RunId,
        kind: RunKind,
        after: Option<String>,
        limit: usize,
        again: bool,
    ) -> Result<(Vec<invoices::InvoiceRow>, Option<String>), BillingError> {
        let lease = TimeDelta::from_std(self.settings.lease).unwrap_or(TimeDelta::MAX);
        let limit = i64::try_from(limit).unwrap_or(64);
        let (worker, run) = (self.worker_id.clone(), run_id.clone());
        let claimed = db::run(&self.pool, move |c| {
            // A run closed as abandoned while this process stalled claims nothing more.
            if !pay_runs::is_running(c, &run)? {
                return Ok(None);
            }
            let now = db::clock::now();
            invoices::claim(
                c,
                invoices::Holder {
                    worker: &worker,
                    run: &run,
                },
                invoices::Scan {
                    after: after.as_deref(),
                    again,
                    only_due: kind == RunKind::Dunning,
                },
                now,
                now + lease,
                limit,
            )
            .map(Some)
        })
        .await?
        .ok_or(BillingError::RunClosed)?;
        Ok((claimed.rows, claimed.cursor))
    }

    /// How long to wait before looking again while other runs hold claims: until the first
    /// of them lapses, and at most [`OTHERS_POLL`] (a live holder settles them sooner), or
    /// `None` when they hold nothing.
    async fn next_lapse_of_others(&self, run_id: &RunId) -> Result<Option<Duration>, BillingError> {
        let run = run_id.clone();
        let (lapse, now) = db::run(&self.pool, move |c| {
            let now = db::clock::now();
            invoices::next_lapse_of_others(c, &run).map(|lapse| (lapse, now))
        })
        .await?;
        Ok(lapse.map(|at| {
            (at - now).to_std().unwrap_or_default().clamp(
                Duration::from_millis(100),
                OTHERS_POLL.min(self.settings.lease),
            )
        }))
    }

    /// The first step of stopping, taken as soon as the process is told to stop (before the
    /// HTTP server drains its requests): no run, claim or call starts from now on, and
    /// retry waits end. The calls in flight finish and are recorded.
    pub fn stop_claiming(&self) {
        self.stopping.send_replace(true);
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Waits `wait`, or less if the process starts stopping meanwhile.
    pub(crate) async fn sleep_unless_stopping(&self, wait: Duration) {
        let mut stop = self.stopping.subscribe();
        if *stop.borrow_and_update() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }

    /// How long a claim lasts, and a run without a heartbeat counts as alive.
    pub fn lease(&self) -> Duration {
        self.settings.lease
    }

    /// Closes as `abandoned` every run whose heartbeat stopped for a whole lease (its
    /// process died), and marks the attempts they left started as interrupted. Any replica
    /// may call it; returns how many runs it closed.
    pub async fn close_abandoned(&self) -> Result<usize, BillingError> {
        let lease = TimeDelta::from_std(self.settings.lease).unwrap_or(TimeDelta::MAX);
        let closing = lock(&self.closing).clone();
        let closed = db::run(&self.pool, move |c| {
            let now = db::clock::now();
            let mut runs = pay_runs::open_runs(c, now - lease, None)?;
            runs.retain(|run| !closing.contains(run));
            close(
                c,
                &runs,
                "its process stopped sending heartbeats (it died)",
                now,
            )
        })
        .await?;
        if closed > 0 {
            tracing::warn!(closed, "closed pay runs whose process died as abandoned");
        }
        Ok(closed)
    }

    /// Stops starting new work, waits up to `grace` for runs in progress, then hands back
    /// any claim still held so another replica can take it at once, and closes the runs
    /// still open as abandoned (their counts say what they did).
    pub async fn shutdown(&self, grace: Duration) {
        self.stop_claiming();
        let deadline = Instant::now() + grace;
        while self.active_runs.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let worker = self.worker_id.clone();
        let released = db::run(&self.pool, move |c| {
            let now = db::clock::now();
            let released = invoices::release_all(c, &worker, now)?;
            let runs = pay_runs::open_runs(c, now, Some(&worker))?;
            let closed = close(c, &runs, "the process stopped before the run finished", now)?;
            Ok::<_, DbError>((released, closed))
        })
        .await;
        match released {
            Ok((0, 0)) => {}
            Ok((released, abandoned)) => {
                tracing::info!(released, abandoned, "handed back claims on shutdown")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not hand back claims; their leases will expire")
            }
        }
    }
}

/// The set's lock, also after a panic elsewhere while it was held (a set of ids stays
/// consistent).
fn lock(closing: &Mutex<HashSet<RunId>>) -> std::sync::MutexGuard<'_, HashSet<RunId>> {
    closing
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a run pays.
enum Source {
    /// What its claims take, batch by batch, as its kind says.
    Claims,
    /// These invoices, claimed for it already (an operator's retry of one invoice).
    Given(Vec<invoices::InvoiceRow>),
}

/// How often a run that has claimed everything it can looks again while other runs hold
/// claims.
const OTHERS_POLL: Duration = Duration::from_secs(1);

/// How many times a run's end is written before the caller is answered (about 3 s of
/// pauses, plus each try's wait for a connection); [`Biller::close_later`] goes on.
const CLOSE_TRIES: u32 = 5;

/// How a run's own close went.
enum Closed {
    /// Recorded with its status; a failed run handed back this many claims.
    Finished { handed_back: usize },
    /// Closed as abandoned by another while this process stalled: its row says so.
    ByAnother,
}

/// Writes the end of `worker`'s run `run_id` as [`close_own`] does, in one transaction.
async fn write_close(
    pool: &DbPool,
    worker: &WorkerId,
    run_id: &RunId,
    status: RunStatus,
    error: Option<String>,
) -> Result<Closed, DbError> {
    let (id, worker) = (run_id.clone(), worker.clone());
    db::run(pool, move |c| {
        let now = db::clock::now();
        c.transaction(|c| close_own(c, &id, &worker, status, error.as_deref(), now))
    })
    .await
}

/// A run's own close, in one transaction: the row (first, as [`close`] takes it), the
/// claims a failed run still holds, and the attempts whose calls were dropped unanswered.
fn close_own(
    c: &mut db::AnyConnection,
    id: &RunId,
    worker: &WorkerId,
    status: RunStatus,
    error: Option<&str>,
    now: chrono::NaiveDateTime,
) -> Result<Closed, diesel::result::Error> {
    let runs = [id.to_owned()];
    let locked = pay_runs::lock_for_close(c, &runs)?;
    // After the wait for the lock: an attempt that committed during it started earlier.
    let now = db::clock::now().max(now);
    if locked.is_empty() {
        // Closed by another while this process stalled: its calls since then stay on
        // record as interrupted, and the row keeps saying abandoned.
        attempts::interrupt(c, &runs, now)?;
        return Ok(Closed::ByAnother);
    }
    let mut handed_back = 0;
    if status == RunStatus::Failed {
        handed_back = invoices::release_run(c, invoices::Holder { worker, run: id }, now)?;
        let mut counts = Summary::default();
        counts.add(RunResult::RetryLater, to_count(handed_back));
        pay_runs::add(c, id, counts, now)?;
    }
    pay_runs::finish(c, id, status, error, now)?;
    attempts::interrupt(c, &runs, now)?;
    Ok(Closed::Finished { handed_back })
}

/// Closes `runs` as abandoned and their attempts still started as interrupted, together.
/// The write comes first in the transaction: a SQLite transaction that reads first cannot
/// take the write lock once another writer has committed.
fn close(
    c: &mut db::AnyConnection,
    runs: &[RunId],
    why: &str,
    now: chrono::NaiveDateTime,
) -> diesel::QueryResult<usize> {
    if runs.is_empty() {
        return Ok(0);
    }
    // The runs' rows first, as a settlement takes them (so the two never wait on each
    // other: PostgreSQL found that deadlock under the chaos harness), and before their
    // attempts: an attempt being recorded meanwhile commits first and is seen here, or
    // finds its run closed and makes no call.
    c.transaction(|c| {
        let runs = pay_runs::lock_for_close(c, runs)?;
        if runs.is_empty() {
            return Ok(0);
        }
        // After the wait for the lock: an attempt that committed during it started earlier.
        let now = db::clock::now().max(now);
        let closed = pay_runs::abandon(c, &runs, why, now)?;
        attempts::interrupt(c, &runs, now)?;
        Ok(closed)
    })
}

/// A number of rows as a count.
fn to_count(rows: usize) -> i64 {
    i64::try_from(rows).unwrap_or(i64::MAX)
}
