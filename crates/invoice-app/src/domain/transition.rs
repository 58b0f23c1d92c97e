//! The invoice's state machine: what each settlement does to an invoice, and from which
//! status. The settlement's SQL (`db::invoices::settle`), the row a run reports, the run's
//! counts and the metrics' labels all follow from here, so a new status or settlement is a
//! change in this file (and the enums) plus its tests.

use strum::{EnumIter, IntoStaticStr};

use super::{InvoiceStatus, Settlement};

/// What a transition does to one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write<T> {
    Keep,
    Clear,
    Set(T),
}

/// Who may apply a transition: the guard of its SQL, which is what keeps two holders of
/// one invoice from both writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Only the run whose claim still holds the invoice (`processing`, claimed by its worker
    /// and run): a run whose claim was taken over leaves the invoice to the new holder.
    Claim,
    /// Whoever holds it, unless it is in the transition's status already: the provider's
    /// answer is the truth, and a replay of the same key gives every holder the same one.
    NotYet,
}

impl Guard {
    /// Whether an invoice in `from` may move to `to` (with the settling run's claim, where
    /// that matters).
    pub fn admits(self, from: InvoiceStatus, to: InvoiceStatus) -> bool {
        match self {
            Guard::Claim => from == InvoiceStatus::Processing,
            Guard::NotYet => from != to,
        }
    }
}

/// How a settled invoice counts in its run: the run's row, its report and the metrics'
/// `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum RunResult {
    Paid,
    Failed,
    /// Back to pending for a later run (the retry budget spent, or needing attention).
    RetryLater,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Invoices by the result they came to: what one settlement adds to its run's row, what a
/// run's report and row say, and what all runs' rows sum to in the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub paid: i64,
    pub failed: i64,
    pub retry_later: i64,
}

impl Summary {
    pub fn of(&self, result: RunResult) -> i64 {
        match result {
            RunResult::Paid => self.paid,
            RunResult::Failed => self.failed,
            RunResult::RetryLater => self.retry_later,
        }
    }

    /// `n` more invoices that came to `result`.
    pub fn add(&mut self, result: RunResult, n: i64) {
        let count = match result {
            RunResult::Paid => &mut self.paid,
            RunResult::Failed => &mut self.failed,
            RunResult::RetryLater => &mut self.retry_later,
        };
        *count = count.saturating_add(n);
    }
}

/// What a settlement writes to an invoice. Every transition also ends the claim
/// (`claimed_by` and `lease_until` cleared) and stamps `updated_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition<'a> {
    pub to: InvoiceStatus,
    pub guard: Guard,
    /// The charge: `charge_id` is set and `paid_at` stamped; `None` leaves both.
    pub charge: Option<&'a str>,
    pub failure_reason: Write<&'a str>,
    /// Why a person should look at it; cleared once it is paid or failed.
    pub attention: Write<&'a str>,
    pub counts_as: RunResult,
}

impl<'a> Transition<'a> {
    /// Paid with `charge_id`, whoever holds the claim now.
    pub const fn paid(charge_id: &'a str) -> Self {
        Transition {
            to: InvoiceStatus::Paid,
            guard: Guard::NotYet,
            charge: Some(charge_id),
            failure_reason: Write::Clear,
            attention: Write::Clear,
            counts_as: RunResult::Paid,
        }
    }
}

/// Back to pending for a later run: a settlement to retry later, and the claims a failed
/// run or a stopping process hands back.
pub const HAND_BACK: Transition<'static> = Transition {
    to: InvoiceStatus::Pending,
    guard: Guard::Claim,
    charge: None,
    failure_reason: Write::Keep,
    attention: Write::Keep,
    counts_as: RunResult::RetryLater,
};

impl Settlement {
    /// What this settlement writes, where its guard admits it.
    pub fn transition(&self) -> Transition<'_> {
        match self {
            Settlement::Paid { charge_id } => Transition::paid(charge_id),
            Settlement::Failed { reason } => Transition {
                to: InvoiceStatus::Failed,
                guard: Guard::Claim,
                charge: None,
                failure_reason: Write::Set(reason),
                attention: Write::Clear,
                counts_as: RunResult::Failed,
            },
            Settlement::RetryLater { .. } => HAND_BACK,
            Settlement::Attention { reason } => Transition {
                attention: Write::Set(reason),
                ..HAND_BACK
            },
        }
    }

    /// Why the invoice was not paid; `None` for a payment.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Settlement::Paid { .. } => None,
            Settlement::Failed { reason }
            | Settlement::RetryLater { reason }
            | Settlement::Attention { reason } => Some(reason),
        }
    }
}

/// The transition `settlement` makes from `from`, or `None` where its guard leaves the
/// invoice as it is (the run's counts and report then leave it out).
pub fn transition(from: InvoiceStatus, settlement: &Settlement) -> Option<Transition<'_>> {
    let t = settlement.transition();
    t.guard.admits(from, t.to).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    use InvoiceStatus::{Failed, Paid, Pending, Processing};

    /// The state machine, written out as a table: every settlement from every status. No
    /// wildcard, so a new status or settlement does not compile until its row is here.
    fn expected(from: InvoiceStatus, s: &Settlement) -> Option<InvoiceStatus> {
        match (s, from) {
            // A payment is recorded whoever holds the claim, once.
            (Settlement::Paid { .. }, Pending | Processing | Failed) => Some(Paid),
            (Settlement::Paid { .. }, Paid) => None,
            (Settlement::Failed { .. }, Processing) => Some(Failed),
            (Settlement::Failed { .. }, Pending | Paid | Failed) => None,
            (Settlement::RetryLater { .. }, Processing) => Some(Pending),
            (Settlement::RetryLater { .. }, Pending | Paid | Failed) => None,
            (Settlement::Attention { .. }, Processing) => Some(Pending),
            (Settlement::Attention { .. }, Pending | Paid | Failed) => None,
        }
    }

    #[test]
    fn every_status_and_settlement() {
        let mut pairs = 0;
        for from in InvoiceStatus::iter() {
            for s in Settlement::iter() {
                pairs += 1;
                let t = transition(from, &s);
                assert_eq!(t.map(|t| t.to), expected(from, &s), "{s:?} from {from}");
                // Where it applies, it is the settlement's one transition.
                if let Some(t) = t {
                    assert_eq!(t, s.transition(), "{s:?} from {from}");
                }
            }
        }
        assert_eq!(
            pairs,
            InvoiceStatus::iter().count() * Settlement::iter().count()
        );
    }

    #[test]
    fn what_each_settlement_writes() {
        let reason = "why".to_owned();
        for s in Settlement::iter() {
            let s = match s {
                Settlement::Paid { .. } => Settlement::Paid {
                    charge_id: "ch_1".into(),
                },
                Settlement::Failed { .. } => Settlement::Failed {
                    reason: reason.clone(),
                },
                Settlement::RetryLater { .. } => Settlement::RetryLater {
                    reason: reason.clone(),
                },
                Settlement::Attention { .. } => Settlement::Attention {
                    reason: reason.clone(),
                },
            };
            let want = match &s {
                Settlement::Paid { .. } => Transition {
                    to: Paid,
                    guard: Guard::NotYet,
                    charge: Some("ch_1"),
                    failure_reason: Write::Clear,
                    attention: Write::Clear,
                    counts_as: RunResult::Paid,
                },
                Settlement::Failed { .. } => Transition {
                    to: Failed,
                    guard: Guard::Claim,
                    charge: None,
                    failure_reason: Write::Set("why"),
                    attention: Write::Clear,
                    counts_as: RunResult::Failed,
                },
                // The failure reason of an earlier run stays, and so does any attention.
                Settlement::RetryLater { .. } => Transition {
                    to: Pending,
                    guard: Guard::Claim,
                    charge: None,
                    failure_reason: Write::Keep,
                    attention: Write::Keep,
                    counts_as: RunResult::RetryLater,
                },
                Settlement::Attention { .. } => Transition {
                    to: Pending,
                    guard: Guard::Claim,
                    charge: None,
                    failure_reason: Write::Keep,
                    attention: Write::Set("why"),
                    counts_as: RunResult::RetryLater,
                },
            };
            assert_eq!(s.transition(), want, "{s:?}");
            assert_eq!(s.reason().is_some(), want.to != Paid, "{s:?}");
        }
        assert_eq!(
            Settlement::RetryLater {
                reason: String::new()
            }
            .transition(),
            HAND_BACK
        );
    }

    /// What the run's report, its counts and the API rely on, for every settlement.
    #[test]
    fn every_transition_ends_the_claim_and_counts_by_its_status() {
        for s in Settlement::iter() {
            let t = s.transition();
            assert_ne!(t.to, Processing, "{s:?} leaves the invoice claimed");
            assert_eq!(t.charge.is_some(), t.to == Paid, "{s:?}");
            assert_eq!(
                matches!(t.failure_reason, Write::Set(_)),
                t.to == Failed,
                "{s:?}"
            );
            if t.to != Pending {
                assert_eq!(t.attention, Write::Clear, "{s:?} keeps its attention");
            }
            let counts_as = match t.to {
                Paid => RunResult::Paid,
                Failed => RunResult::Failed,
                Pending | Processing => RunResult::RetryLater,
            };
            assert_eq!(t.counts_as, counts_as, "{s:?}");
        }
    }

    #[test]
    fn result_labels_stay_what_they_were() {
        let labels: Vec<_> = RunResult::iter().map(RunResult::as_str).collect();
        assert_eq!(labels, ["paid", "failed", "retry_later"]);
    }
}
