//! Prometheus metrics, one registry per application instance.
//!
//! Two kinds: counters of what this process did (requests, calls, settlements, runs), and
//! gauges read from the database at each scrape (`Snapshot`), the same on every replica:
//! the alerts in the chart take their max over replicas. The names are what the chart's
//! rules and dashboard use (charts/invoice-app/files); the live check in `make test` fails
//! on a name either side lacks.

use chrono::NaiveDateTime;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::domain::{RunStatus, Settlement};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pay_runs: HistogramVec,
    runs_ended: IntCounterVec,
    attempts: IntCounterVec,
    unanswered: IntCounter,
    settlements: IntCounterVec,
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
}

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
    pub last_completed: Option<NaiveDateTime>,
    pub now: NaiveDateTime,
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
        let runs_ended = counter_vec(
            "invoice_app_pay_runs_total",
            "Pay runs this process closed, by final status (abandoned: closed for a dead process).",
            &["status"],
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
        let settlements = counter_vec(
            "invoice_app_settlements_total",
            "Invoices whose row a pay run changed, by result (retry_later: retry budget spent).",
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
        };
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(pay_runs.clone()))?;
        registry.register(Box::new(runs_ended.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(unanswered.clone()))?;
        registry.register(Box::new(settlements.clone()))?;
        registry.register(Box::new(db.up.clone()))?;
        registry.register(Box::new(db.invoices.clone()))?;
        registry.register(Box::new(db.attention.clone()))?;
        registry.register(Box::new(db.lease_expired.clone()))?;
        registry.register(Box::new(db.oldest_running.clone()))?;
        registry.register(Box::new(db.oldest_unsettled.clone()))?;
        registry.register(Box::new(db.last_completed.clone()))?;
        // CPU, memory, open files and start time (Linux): the restart alert reads the last.
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        // Every known label value starts at 0: a counter first seen at 1 has no increase
        // for `increase()` to find, so the first failed run would never alert.
        for status in [
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Abandoned,
        ] {
            runs_ended.with_label_values(&[status.as_str()]);
        }
        for result in ["paid", "failed", "retry_later", "attention"] {
            settlements.with_label_values(&[result]);
        }
        for outcome in ["succeeded", "declined", "retryable", "unknown", "attention"] {
            attempts.with_label_values(&[outcome]);
        }
        Ok(Metrics {
            registry,
            requests,
            latency,
            pay_runs,
            runs_ended,
            attempts,
            unanswered,
            settlements,
            db,
        })
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

    pub fn pay_runs_ended(&self, status: RunStatus, n: usize) {
        self.runs_ended
            .with_label_values(&[status.as_str()])
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// One call's outcome; `answered` is false when no HTTP answer came back.
    pub fn charge_attempt(&self, outcome: &str, answered: bool) {
        self.attempts.with_label_values(&[outcome]).inc();
        if !answered {
            self.unanswered.inc();
        }
    }

    /// An invoice row a run changed (counted after its transaction committed).
    pub fn settled(&self, settlement: &Settlement) {
        let result = match settlement {
            Settlement::Paid { .. } => "paid",
            Settlement::Failed { .. } => "failed",
            Settlement::RetryLater { .. } => "retry_later",
            Settlement::Attention { .. } => "attention",
        };
        self.settlements.with_label_values(&[result]).inc();
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
        for status in ["pending", "processing", "paid", "failed"] {
            let n = s
                .invoices_by_status
                .iter()
                .find(|(st, _)| st == status)
                .map_or(0, |(_, n)| *n);
            self.invoices.with_label_values(&[status]).set(n);
        }
        self.attention.set(s.attention);
        self.lease_expired.set(s.lease_expired);
        let age = |since: Option<NaiveDateTime>| {
            since.map_or(0.0, |t| (s.now - t).as_seconds_f64().max(0.0))
        };
        self.oldest_running.set(age(s.oldest_running_started));
        self.oldest_unsettled.set(age(s.oldest_unsettled_attempt));
        match s.last_completed {
            Some(t) => self
                .last_completed
                .with_label_values(&[] as &[&str])
                .set(t.and_utc().timestamp_millis() as f64 / 1000.0),
            None => self.last_completed.reset(),
        }
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
        let m = Metrics::new().expect("metrics");
        let snapshot = Snapshot {
            invoices_by_status: vec![("pending".into(), 3)],
            attention: 2,
            lease_expired: 1,
            oldest_running_started: Some(at("2026-11-01 00:00:00")),
            oldest_unsettled_attempt: Some(at("2026-11-01 00:59:00")),
            last_completed: None,
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
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("invoice_app_last_completed_pay_run_timestamp_seconds "));

        let done = Snapshot {
            last_completed: Some(at("2026-11-01 00:30:00")),
            ..snapshot
        };
        let text = m.render(Some(&done)).expect("renders");
        assert!(text.contains("invoice_app_last_completed_pay_run_timestamp_seconds 1793493000"));

        let text = m.render(None).expect("renders");
        assert!(text.lines().any(|l| l == "invoice_app_database_up 0"));
    }
}
