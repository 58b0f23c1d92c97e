//! Injected faults for resilience testing, all off by default.

use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Share (0–1) of charge requests answered 503 before anything is done.
    pub unavailable_rate: f64,
    /// Extra time each charge takes, after its key is claimed.
    pub latency: Duration,
    /// `Retry-After` of injected 503s.
    pub retry_after_secs: u32,
}

impl Faults {
    pub fn should_fail(&self) -> bool {
        self.unavailable_rate > 0.0 && rand::random::<f64>() < self.unavailable_rate
    }
}
