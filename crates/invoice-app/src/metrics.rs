//! Prometheus metrics, one registry per application instance.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    invoices: IntGaugeVec,
    pay_runs: HistogramVec,
    attempts: IntCounterVec,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status.",
            ),
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
        let invoices = IntGaugeVec::new(
            Opts::new("invoice_app_invoices", "Invoices by status."),
            &["status"],
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
        let attempts = IntCounterVec::new(
            Opts::new(
                "invoice_app_charge_attempts_total",
                "Charge attempts at payment-provider by outcome.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(invoices.clone()))?;
        registry.register(Box::new(pay_runs.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            invoices,
            pay_runs,
            attempts,
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

    pub fn charge_attempt(&self, outcome: &str) {
        self.attempts.with_label_values(&[outcome]).inc();
    }

    /// The text exposition format, with the invoice counts read just now.
    pub fn render(&self, invoices_by_status: &[(String, i64)]) -> anyhow::Result<String> {
        for status in ["pending", "processing", "paid", "failed"] {
            let n = invoices_by_status
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            self.invoices.with_label_values(&[status]).set(n);
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }
}
