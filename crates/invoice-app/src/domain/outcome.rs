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
    /// Our own request was refused (bad token, missing key): retrying won't help, and it is
    /// no fault of the invoice, so it stays payable.
    Rejected { reason: String },
}

impl CallOutcome {
    /// Label for the attempt record and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CallOutcome::Succeeded { .. } => "succeeded",
            CallOutcome::Declined { .. } => "declined",
            CallOutcome::Retryable { .. } => "retryable",
            CallOutcome::Unknown { .. } => "unknown",
            CallOutcome::Rejected { .. } => "rejected",
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
}
