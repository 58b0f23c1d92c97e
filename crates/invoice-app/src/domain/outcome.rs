use std::str::FromStr;
use std::time::Duration;

use api_contract::{ChargeResponse, DeclineClass, ErrorCode};
use chrono::NaiveDateTime;
use serde::Serialize;
use strum::{EnumIter, IntoStaticStr};

/// What one call to the provider told us, in the classes DESIGN.md names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// Charged (201) or charged before (200 replay).
    Succeeded {
        charge: ChargeResponse,
        replayed: bool,
    },
    /// A no for this key: insufficient funds or try again later (soft: a later attempt
    /// may pass), customer not found, currency mismatch, account closed or invalid (hard).
    Declined {
        code: ErrorCode,
        class: DeclineClass,
        detail: String,
    },
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
    /// The class the attempt record and the metrics keep.
    pub fn attempt_outcome(&self) -> AttemptOutcome {
        match self {
            CallOutcome::Succeeded { .. } => AttemptOutcome::Succeeded,
            CallOutcome::Declined { .. } => AttemptOutcome::Declined,
            CallOutcome::Retryable { .. } => AttemptOutcome::Retryable,
            CallOutcome::Unknown { .. } => AttemptOutcome::Unknown,
            CallOutcome::Attention { .. } => AttemptOutcome::Attention,
        }
    }
}

/// What a lookup of an invoice's key at the provider found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupOutcome {
    /// The provider's answer, read as a call's: the key's stored answer as its replay says
    /// it (a charge, a decline), or a lookup that did not get one (in flight, 429, 5xx, a
    /// timeout, a refused credential).
    Answer(CallOutcome),
    /// Nothing under the key: no charge was made with it.
    NotFound,
}

/// The class of a decline with `code`: the contract's for the account's refusals. Our
/// request refused as invalid is hard too: the same request is refused on every attempt.
/// `None` for a code that is no decline.
pub fn decline_class(code: ErrorCode) -> Option<DeclineClass> {
    match code {
        ErrorCode::InvalidRequest => Some(DeclineClass::Hard),
        other => other.decline_class(),
    }
}

/// What an attempt's record says of its call, as `payment_attempts.outcome` holds it (and
/// the API shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, EnumIter, IntoStaticStr)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum AttemptOutcome {
    /// The call is being made (written before it starts).
    Started,
    /// Its process stopped or its run was closed during the call: whether it arrived, the
    /// next call with the same key tells.
    Interrupted,
    Succeeded,
    Declined,
    Retryable,
    Unknown,
    Attention,
    /// A lookup found nothing under the invoice's key: no charge was made with it.
    NotFound,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether a charge's call ended with this result (a class of [`CallOutcome`]), rather
    /// than being in flight or cut off: the metrics count these. A lookup's `not_found` is
    /// no charge's result.
    pub fn is_call_result(self) -> bool {
        !matches!(
            self,
            AttemptOutcome::Started | AttemptOutcome::Interrupted | AttemptOutcome::NotFound
        )
    }
}

impl FromStr for AttemptOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        super::parse_variant("attempt outcome", s)
    }
}

/// How a pay attempt ended for the invoice. What each does to the invoice is its
/// [`Transition`](super::Transition).
#[derive(Debug, Clone, PartialEq, Eq, EnumIter)]
pub enum Settlement {
    Paid {
        charge_id: String,
    },
    /// Refused for good: a hard decline, or an invoice that cannot be charged as stored.
    Failed {
        reason: String,
        /// `Hard` for the provider's decline; `None` when the invoice failed here.
        decline: Option<DeclineClass>,
    },
    /// Declined softly with retries left in the dunning schedule: past due until
    /// `next_attempt_at`.
    PastDue {
        reason: String,
        /// Soft declines so far, this one included.
        attempt_count: i32,
        next_attempt_at: NaiveDateTime,
        /// The first soft decline, which the schedule counts from.
        since: NaiveDateTime,
    },
    /// Declined softly on the schedule's last retry: given up on.
    Uncollectible {
        reason: String,
        attempt_count: i32,
    },
    /// Back to pending for a later run.
    RetryLater {
        reason: String,
    },
    /// Back to pending, marked for a person to look at.
    Attention {
        reason: String,
    },
    /// Back to where it waits with its attention cleared: reconciliation found nothing
    /// charged under its key, so the next run charges it (under the same key).
    Released {
        reason: String,
    },
}

/// Whether an attempt's request left this service, as its record (and the API) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, EnumIter, IntoStaticStr)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum Sent {
    /// An answer came back.
    Yes,
    /// Refused before anything was sent (connection refused).
    No,
    /// A timeout or a lost connection: it may have arrived.
    Unknown,
}

impl Sent {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl FromStr for Sent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        super::parse_variant("sent", s)
    }
}

/// Where a pay run stands, as its row (and the API) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, EnumIter, IntoStaticStr)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    /// Stopped by an error of this service (its database); the counts say what it did.
    Failed,
    /// Its process died or stopped first; closed by whoever noticed.
    Abandoned,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        super::parse_variant("run status", s)
    }
}

/// What started a pay run, as its row (and the API) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, EnumIter, IntoStaticStr)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum Trigger {
    /// `POST /invoices/pay` or `POST /pay-runs`.
    Api,
    /// The in-process schedule.
    Schedule,
    /// `invoice-app pay` (the CronJob).
    Cli,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl FromStr for Trigger {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        super::parse_variant("trigger", s)
    }
}

/// What a run does, as its row (and the API) says; who started it is its [`Trigger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, EnumIter, IntoStaticStr)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum RunKind {
    /// Charges every invoice it can claim: pending, past-due and due, and lapsed claims.
    Pay,
    /// Charges only the past-due invoices that are due (and lapsed claims): the daily run.
    Dunning,
    /// Looks invoices that may have been charged up at the provider; charges nothing.
    Reconcile,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl FromStr for RunKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        super::parse_variant("run kind", s)
    }
}

/// What an attempt sent to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, EnumIter, IntoStaticStr)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum AttemptKind {
    /// The charge itself, under the invoice's idempotency key.
    Charge,
    /// A read of what the provider holds under the invoice's key (reconciliation).
    Lookup,
}

impl AttemptKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl FromStr for AttemptKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        super::parse_variant("attempt kind", s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    /// The text each variant is stored as: a rename here would change what the database
    /// and the metrics hold, so it is written out once more.
    #[test]
    fn stored_texts_stay_what_they_were() {
        let texts = |all: Vec<&'static str>| all.join(" ");
        assert_eq!(
            texts(RunStatus::iter().map(RunStatus::as_str).collect()),
            "running completed failed abandoned"
        );
        assert_eq!(
            texts(AttemptOutcome::iter().map(AttemptOutcome::as_str).collect()),
            "started interrupted succeeded declined retryable unknown attention not_found"
        );
        assert_eq!(
            texts(Sent::iter().map(Sent::as_str).collect()),
            "yes no unknown"
        );
        assert_eq!(
            texts(Trigger::iter().map(Trigger::as_str).collect()),
            "api schedule cli"
        );
        assert_eq!(
            texts(RunKind::iter().map(RunKind::as_str).collect()),
            "pay dunning reconcile"
        );
        assert_eq!(
            texts(AttemptKind::iter().map(AttemptKind::as_str).collect()),
            "charge lookup"
        );
        for k in RunKind::iter() {
            assert_eq!(k.as_str().parse(), Ok(k));
        }
        for k in AttemptKind::iter() {
            assert_eq!(k.as_str().parse(), Ok(k));
        }
        for t in Trigger::iter() {
            assert_eq!(t.as_str().parse(), Ok(t));
        }
        for s in RunStatus::iter() {
            assert_eq!(s.as_str().parse(), Ok(s));
            assert_eq!(
                serde_json::to_value(s).expect("serialises"),
                serde_json::Value::from(s.as_str())
            );
        }
        let shown = |v: serde_json::Value| v.as_str().map(str::to_owned);
        for o in AttemptOutcome::iter() {
            assert_eq!(o.as_str().parse(), Ok(o));
            assert_eq!(shown(serde_json::json!(o)).as_deref(), Some(o.as_str()));
        }
        for s in Sent::iter() {
            assert_eq!(s.as_str().parse(), Ok(s));
            assert_eq!(shown(serde_json::json!(s)).as_deref(), Some(s.as_str()));
        }
        for t in Trigger::iter() {
            assert_eq!(shown(serde_json::json!(t)).as_deref(), Some(t.as_str()));
        }
        assert!("Running".parse::<RunStatus>().is_err());
    }

    /// The metrics' outcome labels, as they were before they followed the enum.
    #[test]
    fn call_results_are_the_five_classes() {
        let results: Vec<_> = AttemptOutcome::iter()
            .filter(|o| o.is_call_result())
            .map(AttemptOutcome::as_str)
            .collect();
        assert_eq!(
            results,
            ["succeeded", "declined", "retryable", "unknown", "attention"]
        );
    }
}
