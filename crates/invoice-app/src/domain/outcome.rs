use std::time::Duration;

use api_contract::{ChargeResponse, ErrorCode};

/// What one call to the provider told us, in the classes DESIGN.md names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// Charged (201) or charged before (200 replay).
    Succeeded {
        charge: ChargeResponse,
        replayed: bool,
    },
    /// A final no: customer not found, currency mismatch, insufficient funds, invalid.
    Declined { code: ErrorCode, detail: String },
    /// Not done, safe to try again: 409 in flight, 429, 5xx, connection refused.
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The request may or may not have been charged (timeout, connection lost after
    /// sending, an unreadable success). Retried with the same key; the replay tells.
    Unknown { reason: String },
    /// An answer that needs a person, never a decline: our credential or request refused,
    /// the key held for another request (charged or not, we cannot tell), or a code we do
    /// not know. Retrying now won't help; the invoice stays payable and says why.
    Attention { reason: String },
}

impl CallOutcome {
    /// Label for the attempt record and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CallOutcome::Succeeded { .. } => "succeeded",
            CallOutcome::Declined { .. } => "declined",
            CallOutcome::Retryable { .. } => "retryable",
            CallOutcome::Unknown { .. } => "unknown",
            CallOutcome::Attention { .. } => "attention",
        }
    }
}

/// How a pay attempt ended for the invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Paid {
        charge_id: String,
    },
    Failed {
        reason: String,
    },
    /// Back to pending for a later run.
    RetryLater {
        reason: String,
    },
    /// Back to pending, marked for a person to look at.
    Attention {
        reason: String,
    },
}

/// Whether an attempt's request left this service, as its record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// An answer came back.
    Yes,
    /// Refused before anything was sent (connection refused).
    No,
    /// A timeout or a lost connection: it may have arrived.
    Unknown,
}

impl Sent {
    pub const fn as_str(self) -> &'static str {
        match self {
            Sent::Yes => "yes",
            Sent::No => "no",
            Sent::Unknown => "unknown",
        }
    }
}

/// Where a pay run stands, as its row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Completed,
    /// Stopped by an error of this service (its database); the counts say what it did.
    Failed,
    /// Its process died or stopped first; closed by whoever noticed.
    Abandoned,
}

impl RunStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Abandoned => "abandoned",
        }
    }
}
