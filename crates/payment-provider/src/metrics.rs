//! Prometheus metrics, one registry per application instance. The names are what the
//! chart's rules and dashboard use (charts/payment-provider/files).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    charges: IntCounterVec,
    database_up: IntGauge,
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
        let charges = IntCounterVec::new(
            Opts::new(
                "payment_provider_charges_total",
                "Charge requests by outcome.",
            ),
            &["outcome"],
        )?;
        // The charge route's refusals and server errors start at 0: a counter first seen at
        // 1 has no increase for `rate()` to find (the SLO and the refused-callers alert).
        for status in ["401", "500", "503"] {
            requests.with_label_values(&["POST", api_contract::CHARGES_PATH, status]);
        }
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        let database_up = IntGauge::new(
            "payment_provider_database_up",
            "1 if the database answered this scrape's query, else 0.",
        )?;
        registry.register(Box::new(charges.clone()))?;
        registry.register(Box::new(database_up.clone()))?;
        // CPU, memory, open files and start time (Linux): the restart alert reads the last.
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            charges,
            database_up,
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

    pub fn charge_outcome(&self, outcome: &str) {
        self.charges.with_label_values(&[outcome]).inc();
    }

    /// The text exposition format, with whether the database answered just now.
    pub fn render(&self, database_up: bool) -> anyhow::Result<String> {
        self.database_up.set(i64::from(database_up));
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }
}
