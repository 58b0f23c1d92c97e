//! Injected faults for resilience and contract testing, all off by default.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Share (0–1) of charge requests answered 503 before anything is done.
    pub unavailable_rate: f64,
    /// Share (0–1) of charge requests answered 429 `rate_limited` before anything is done:
    /// this provider has no rate limit of its own, but its callers must handle one.
    pub rate_limited_rate: f64,
    /// Extra time each charge takes, after its key is claimed.
    pub latency: Duration,
    /// `Retry-After` of injected 503s and 429s.
    pub retry_after_secs: u32,
    /// While set, every charge request is answered 503, whatever the rate. Shared by all
    /// clones, so tests can switch an outage on and off while the provider runs.
    pub outage: Arc<AtomicBool>,
    /// While set, every charge request is answered 429, whatever the rate (shared likewise).
    pub rate_limited: Arc<AtomicBool>,
}

/// A fault to answer with instead of processing the charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    Unavailable,
    RateLimited,
}

impl Faults {
    /// Whether this charge request meets an injected fault, and which.
    pub fn roll(&self) -> Option<Injected> {
        if self.outage.load(Ordering::Relaxed) || hit(self.unavailable_rate) {
            Some(Injected::Unavailable)
        } else if self.rate_limited.load(Ordering::Relaxed) || hit(self.rate_limited_rate) {
            Some(Injected::RateLimited)
        } else {
            None
        }
    }

    /// Whether any fault can happen without a test switching it on.
    pub fn configured(&self) -> bool {
        self.unavailable_rate > 0.0 || self.rate_limited_rate > 0.0 || !self.latency.is_zero()
    }
}

fn hit(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
}
