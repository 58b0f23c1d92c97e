//! Injected faults for resilience testing, all off by default.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Share (0–1) of charge requests answered 503 before anything is done.
    pub unavailable_rate: f64,
    /// Extra time each charge takes, after its key is claimed.
    pub latency: Duration,
    /// `Retry-After` of injected 503s.
    pub retry_after_secs: u32,
    /// While set, every charge request is answered 503, whatever the rate. Shared by all
    /// clones, so tests can switch an outage on and off while the provider runs.
    pub outage: Arc<AtomicBool>,
}

impl Faults {
    pub fn should_fail(&self) -> bool {
        self.outage.load(Ordering::Relaxed)
            || (self.unavailable_rate > 0.0 && rand::random::<f64>() < self.unavailable_rate)
    }
}
