//! Prometheus metrics, one registry per application instance.
//!
//! Two kinds: counters of what this process did (requests, charge calls), and gauges read
//! from the database at each scrape (`Snapshot`), the same on every replica. The alerts read
//! the gauges (taking their max over replicas): they also see the runs of the pay-run
//! CronJob, a process no Prometheus scrapes. The names are what the chart's
//! rules and dashboard use (charts/invoice-app/files); the live check in `make test` fails
//! on a name either side lacks.

use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use strum::IntoEnumIterator;

use crate::db::{self, DbPool};
use crate::domain::{AttemptOutcome, InvoiceStatus, RunKind, RunResult, RunStatus, Summary};

/// The outcomes of a charge call that ended (`CallOutcome::attempt_outcome`).
fn call_results() -> impl Iterator<Item = &'static str> {
    AttemptOutcome::iter()
        .filter(|o| o.is_call_result())
        .map(AttemptOutcome::as_str)
}

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pay_runs: HistogramVec,
    attempts: IntCounterVec,
    unanswered: IntCounter,
    reconciled: IntCounterVec,
    db: DbGauges,
}

/// The gauges `render` sets from a `Snapshot`.
#[derive(Clone)]
struct DbGauges {
    up: IntGauge,
    invoices: IntGaugeVec,
    attention: IntGauge,
    lease_expired: IntGauge,
    oldest_running: Gauge,
    oldest_unsettled: Gauge,
    // Without labels, so it is absent until a run completed (a 0 would read as 1970).
    last_completed: GaugeVec,
    last_completed_daily: GaugeVec,
    runs: IntGaugeVec,
    run_invoices: IntGaugeVec,
    recent_attempts: IntGaugeVec,
    recent_unanswered: IntGauge,
    retries_due: IntGauge,
    oldest_retry_due: Gauge,
    dunning: IntGaugeVec,
}

/// The window of `invoice_app_recent_charge_attempts`.
pub const RECENT: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// The window of `invoice_app_dunning_invoices`, by first decline: a monthly cycle, so
/// the default schedule (3d,5d,7d) of one billing day's declines ends inside it.
pub const DUNNING_WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(30);

/// What the database says at scrape time.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub invoices_by_status: Vec<(String, i64)>,
    /// Pending invoices marked for a person to look at.
    pub attention: i64,
    /// Invoices in `processing` whose claim's lease has run out.
    pub lease_expired: i64,
    pub oldest_running_started: Option<NaiveDateTime>,
    /// The first attempt of the oldest invoice still unsettled that a run tried.
    pub oldest_unsettled_attempt: Option<NaiveDateTime>,
    /// When the last completed pay run finished, and the last completed dunning run (the
    /// daily run's retries).
    pub last_completed: Option<NaiveDateTime>,
    pub last_completed_daily: Option<NaiveDateTime>,
    /// Runs by status, and the invoices all runs settled by result.
    pub runs_by_status: Vec<(String, i64)>,
    pub run_invoices: Summary,
    /// Ended attempts started within `RECENT`, by outcome, and those without an answer.
    pub recent_attempts: Vec<(String, i64)>,
    pub recent_unanswered: i64,
    /// Past-due invoices whose retry is due, and the earliest due time among them.
    pub retries_due: i64,
    pub oldest_retry_due: Option<NaiveDateTime>,
    /// Invoices that went past due within `DUNNING_WINDOW`, by status now (one given up at
    /// its first decline, with no retry in the schedule, never went past due).
    pub dunning_by_status: Vec<(String, i64)>,
    pub now: NaiveDateTime,
}

/// How long a scrape waits for the database: well within Prometheus's default scrape
/// timeout (10 s), so a hung database reads as down rather than as a failed scrape.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);

impl Snapshot {
    /// What the database says now; `None` when it does not answer (in time). A run is
    /// alive while its heartbeat is younger than `lease` (as `close_abandoned` says).
    pub async fn read(pool: &DbPool, lease: Duration) -> Option<Snapshot> {
        let lease = TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX);
        let read = db::read(pool, move |c| Snapshot::query(c, lease));
        match tokio::time::timeout(SNAPSHOT_TIMEOUT, read).await {
            Ok(Ok(snapshot)) => Some(snapshot),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "metrics: the database did not answer");
                None
            }
            Err(_) => {
                tracing::warn!(timeout = ?SNAPSHOT_TIMEOUT, "metrics: the database did not answer in time");
                None
            }
        }
    }

    fn query(c: &mut db::AnyConnection, lease: TimeDelta) -> diesel::QueryResult<Snapshot> {
        let now = crate::db::clock::now();
        let (runs_by_status, run_invoices) = db::pay_runs::totals(c)?;
        let (recent_attempts, recent_unanswered) = db::attempts::recent(c, now - RECENT)?;
        let (retries_due, oldest_retry_due) = db::invoices::retries_due(c, now)?;
        Ok(Snapshot {
            retries_due,
            oldest_retry_due,
            dunning_by_status: db::invoices::count_dunning_by_status(c, now - DUNNING_WINDOW)?,
            runs_by_status,
            run_invoices,
            recent_attempts,
            recent_unanswered,
            invoices_by_status: db::invoices::count_by_status(c)?,
            attention: db::invoices::count_attention(c)?,
            lease_expired: db::invoices::count_lease_expired(
                c,
                now,
                now.checked_sub_signed(lease).unwrap_or(NaiveDateTime::MIN),
            )?,
            oldest_running_started: db::pay_runs::oldest_running(c)?,
            oldest_unsettled_attempt: db::attempts::oldest_unsettled(c)?,
            last_completed: db::pay_runs::last_completed(c, RunKind::Pay)?,
            last_completed_daily: db::pay_runs::last_completed(c, RunKind::Dunning)?,
            now,
        })
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let requests = counter_vec(
            "http_requests_total",
            "HTTP requests by route, method and status.",
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["method", "route"],
        )?;
        let pay_runs = HistogramVec::new(
            HistogramOpts::new(
                "invoice_app_pay_run_duration_seconds",
                "Duration of pay runs.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
            ]),
            &[],
        )?;
        let attempts = counter_vec(
            "invoice_app_charge_attempts_total",
            "Charge attempts at payment-provider by outcome.",
            &["outcome"],
        )?;
        let unanswered = IntCounter::new(
            "invoice_app_charge_calls_unanswered_total",
            "Charge calls that got no HTTP answer (refused, reset or timed out).",
        )?;
        let reconciled = counter_vec(
            "invoice_app_reconciled_total",
            "Invoices that may have been charged, looked up at payment-provider by their key \
             and settled by this process, by result (paid: charged but not yet paid here; \
             released; declined; attention; retry: no answer yet).",
            &["result"],
        )?;
        let db = DbGauges {
            up: IntGauge::new(
                "invoice_app_database_up",
                "1 if the database answered this scrape's queries, else 0.",
            )?,
            invoices: IntGaugeVec::new(
                Opts::new("invoice_app_invoices", "Invoices by status."),
                &["status"],
            )?,
            attention: IntGauge::new(
                "invoice_app_invoices_attention",
                "Pending invoices marked for a person to look at.",
            )?,
            lease_expired: IntGauge::new(
                "invoice_app_invoices_lease_expired",
                "Invoices in processing whose claim's lease has run out.",
            )?,
            oldest_running: Gauge::new(
                "invoice_app_pay_run_oldest_running_seconds",
                "Age of the oldest running pay run; 0 if none runs.",
            )?,
            oldest_unsettled: Gauge::new(
                "invoice_app_oldest_unsettled_seconds",
                "Time since the first attempt of the oldest invoice a run tried that is \
                 neither paid nor failed; 0 if none.",
            )?,
            last_completed: GaugeVec::new(
                Opts::new(
                    "invoice_app_last_completed_pay_run_timestamp_seconds",
                    "When the last completed pay run finished (Unix time).",
                ),
                &[],
            )?,
            last_completed_daily: GaugeVec::new(
                Opts::new(
                    "invoice_app_last_completed_daily_run_timestamp_seconds",
                    "When the last completed daily run (its past-due retries) finished (Unix \
                     time).",
                ),
                &[],
            )?,
            runs: IntGaugeVec::new(
                Opts::new(
                    "invoice_app_pay_runs",
                    "Pay runs recorded, by status (every process's, the CronJob's too).",
                ),
                &["status"],
            )?,
            run_invoices: IntGaugeVec::new(
                Opts::new(
                    "invoice_app_pay_run_invoices",
                    "Invoices settled by all pay runs, by result (retry_later: retry budget \
                     spent or needing attention).",
                ),
                &["result"],
            )?,
            recent_attempts: IntGaugeVec::new(
                Opts::new(
                    "invoice_app_recent_charge_attempts",
                    "Charge attempts started in the last 10 minutes that ended, by outcome \
                     (every process's).",
                ),
                &["outcome"],
            )?,
            recent_unanswered: IntGauge::new(
                "invoice_app_recent_charge_attempts_unanswered",
                "Of those, the calls that got no HTTP answer (refused, reset, timed out).",
            )?,
            retries_due: IntGauge::new(
                "invoice_app_invoices_retry_due",
                "Past-due invoices whose next attempt is due: retries no run has made yet.",
            )?,
            oldest_retry_due: Gauge::new(
                "invoice_app_oldest_retry_due_seconds",
                "Time since the earliest due retry of a past-due invoice fell due; 0 if none \
                 is due.",
            )?,
            dunning: IntGaugeVec::new(
                Opts::new(
                    "invoice_app_dunning_invoices",
                    "Invoices that went past due (a first soft decline) in the last 30 days, \
                     by status now (past_due: still in dunning; paid: recovered; \
                     uncollectible: schedule spent).",
                ),
                &["status"],
            )?,
        };
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(pay_runs.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(unanswered.clone()))?;
        registry.register(Box::new(reconciled.clone()))?;
        registry.register(Box::new(db.up.clone()))?;
        registry.register(Box::new(db.invoices.clone()))?;
        registry.register(Box::new(db.attention.clone()))?;
        registry.register(Box::new(db.lease_expired.clone()))?;
        registry.register(Box::new(db.oldest_running.clone()))?;
        registry.register(Box::new(db.oldest_unsettled.clone()))?;
        registry.register(Box::new(db.last_completed.clone()))?;
        registry.register(Box::new(db.last_completed_daily.clone()))?;
        registry.register(Box::new(db.runs.clone()))?;
        registry.register(Box::new(db.run_invoices.clone()))?;
        registry.register(Box::new(db.recent_attempts.clone()))?;
        registry.register(Box::new(db.recent_unanswered.clone()))?;
        registry.register(Box::new(db.retries_due.clone()))?;
        registry.register(Box::new(db.oldest_retry_due.clone()))?;
        registry.register(Box::new(db.dunning.clone()))?;
        // CPU, memory, open files and start time (Linux): the restart alert reads the last.
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        for outcome in call_results() {
            attempts.with_label_values(&[outcome]);
        }
        // From 0, so the first charged-but-unpaid invoice found is an increase.
        for result in crate::billing::Reconciled::ALL {
            reconciled.with_label_values(&[result.as_str()]);
        }
        Ok(Metrics {
            registry,
            requests,
            latency,
            pay_runs,
            attempts,
            unanswered,
            reconciled,
            db,
        })
    }

    /// Starts the server-error series of the routes the availability objective counts
    /// (`(method, route)` labels, from the route table `http::ROUTES`) at 0: a counter first
    /// seen at 1 has no increase for `rate()` to find, so the first server error of a route
    /// would burn no budget.
    pub fn with_routes<'a>(self, routes: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        for (method, route) in routes {
            for status in ["500", "503"] {
                self.requests.with_label_values(&[method, route, status]);
            }
        }
        self
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[method, route])
            .observe(seconds);
    }

    pub fn observe_pay_run(&self, seconds: f64) {
        self.pay_runs
            .with_label_values(&[] as &[&str])
            .observe(seconds);
    }

    /// One call's outcome; `answered` is false when no HTTP answer came back.
    pub fn charge_attempt(&self, outcome: AttemptOutcome, answered: bool) {
        self.attempts.with_label_values(&[outcome.as_str()]).inc();
        if !answered {
            self.unanswered.inc();
        }
    }

    /// One invoice reconciliation settled, by its `result` ([`crate::billing::Reconciled`]).
    pub fn reconciled(&self, result: &str) {
        self.reconciled.with_label_values(&[result]).inc();
    }

    /// The text exposition format, with the gauges read from the database just now, or
    /// `invoice_app_database_up 0` (and the others as last read) when it did not answer.
    pub fn render(&self, snapshot: Option<&Snapshot>) -> anyhow::Result<String> {
        match snapshot {
            Some(s) => self.db.set(s),
            None => self.db.up.set(0),
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }
}

impl DbGauges {
    fn set(&self, s: &Snapshot) {
        self.up.set(1);
        set_counts(
            &self.invoices,
            &s.invoices_by_status,
            InvoiceStatus::iter().map(InvoiceStatus::as_str),
        );
        self.attention.set(s.attention);
        self.lease_expired.set(s.lease_expired);
        let age = |since: Option<NaiveDateTime>| {
            since.map_or(0.0, |t| (s.now - t).as_seconds_f64().max(0.0))
        };
        self.oldest_running.set(age(s.oldest_running_started));
        self.oldest_unsettled.set(age(s.oldest_unsettled_attempt));
        for (gauge, at) in [
            (&self.last_completed, s.last_completed),
            (&self.last_completed_daily, s.last_completed_daily),
        ] {
            match at {
                Some(t) => gauge
                    .with_label_values(&[] as &[&str])
                    .set(t.and_utc().timestamp_millis() as f64 / 1000.0),
                None => gauge.reset(),
            }
        }
        set_counts(
            &self.runs,
            &s.runs_by_status,
            RunStatus::iter().map(RunStatus::as_str),
        );
        for result in RunResult::iter() {
            self.run_invoices
                .with_label_values(&[result.as_str()])
                .set(s.run_invoices.of(result));
        }
        set_counts(&self.recent_attempts, &s.recent_attempts, call_results());
        self.recent_unanswered.set(s.recent_unanswered);
        self.retries_due.set(s.retries_due);
        self.oldest_retry_due.set(age(s.oldest_retry_due));
        set_counts(
            &self.dunning,
            &s.dunning_by_status,
            InvoiceStatus::iter().map(InvoiceStatus::as_str),
        );
    }
}

/// Sets `gauges` for each of `labels` to its count in `rows` (a `GROUP BY`), 0 if absent:
/// every label value is exported, so a first occurrence is a rise from 0.
fn set_counts<'a>(
    gauges: &IntGaugeVec,
    rows: &[(String, i64)],
    labels: impl IntoIterator<Item = &'a str>,
) {
    for label in labels {
        let n = rows.iter().find(|(k, _)| k == label).map_or(0, |(_, n)| *n);
        gauges.with_label_values(&[label]).set(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("a time")
    }

    #[test]
    fn gauges_follow_the_snapshot_and_a_failed_read_shows_the_database_down() {
        let m = Metrics::new()
            .expect("metrics")
            .with_routes([("POST", "/invoices/pay")]);
        let snapshot = Snapshot {
            invoices_by_status: vec![("pending".into(), 3)],
            attention: 2,
            lease_expired: 1,
            oldest_running_started: Some(at("2026-11-01 00:00:00")),
            oldest_unsettled_attempt: Some(at("2026-11-01 00:59:00")),
            last_completed: None,
            last_completed_daily: None,
            runs_by_status: vec![("failed".into(), 2), ("completed".into(), 5)],
            run_invoices: Summary {
                paid: 40,
                failed: 1,
                retry_later: 3,
            },
            recent_attempts: vec![("retryable".into(), 7), ("succeeded".into(), 2)],
            recent_unanswered: 6,
            retries_due: 4,
            oldest_retry_due: Some(at("2026-10-30 01:00:00")),
            dunning_by_status: vec![("paid".into(), 5), ("uncollectible".into(), 2)],
            now: at("2026-11-01 01:00:00"),
        };
        let text = m.render(Some(&snapshot)).expect("renders");
        for line in [
            "invoice_app_database_up 1",
            "invoice_app_invoices{status=\"pending\"} 3",
            "invoice_app_invoices{status=\"paid\"} 0",
            "invoice_app_invoices_attention 2",
            "invoice_app_invoices_lease_expired 1",
            "invoice_app_pay_run_oldest_running_seconds 3600",
            "invoice_app_oldest_unsettled_seconds 60",
            "invoice_app_pay_runs{status=\"failed\"} 2",
            "invoice_app_pay_runs{status=\"abandoned\"} 0",
            "invoice_app_pay_run_invoices{result=\"retry_later\"} 3",
            "invoice_app_recent_charge_attempts{outcome=\"retryable\"} 7",
            "invoice_app_recent_charge_attempts{outcome=\"unknown\"} 0",
            "invoice_app_recent_charge_attempts_unanswered 6",
            "invoice_app_invoices_retry_due 4",
            "invoice_app_oldest_retry_due_seconds 172800",
            "invoice_app_dunning_invoices{status=\"uncollectible\"} 2",
            "invoice_app_dunning_invoices{status=\"past_due\"} 0",
            "invoice_app_reconciled_total{result=\"paid\"} 0",
            "http_requests_total{method=\"POST\",route=\"/invoices/pay\",status=\"503\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("invoice_app_last_completed_pay_run_timestamp_seconds "));
        assert!(!text.contains("invoice_app_last_completed_daily_run_timestamp_seconds "));

        let done = Snapshot {
            last_completed: Some(at("2026-11-01 00:30:00")),
            last_completed_daily: Some(at("2026-11-01 06:00:00")),
            retries_due: 0,
            oldest_retry_due: None,
            ..snapshot
        };
        let text = m.render(Some(&done)).expect("renders");
        assert!(text.contains("invoice_app_last_completed_pay_run_timestamp_seconds 1793493000"));
        assert!(text.contains("invoice_app_last_completed_daily_run_timestamp_seconds 1793512800"));
        assert!(
            text.lines()
                .any(|l| l == "invoice_app_oldest_retry_due_seconds 0")
        );

        let text = m.render(None).expect("renders");
        assert!(text.lines().any(|l| l == "invoice_app_database_up 0"));
    }
}
