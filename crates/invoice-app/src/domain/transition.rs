//! The invoice's state machine: what each settlement does to an invoice, and from which
//! status. The settlement's SQL (`db::invoices::settle`), the row a run reports, the run's
//! counts and the metrics' labels all follow from here, so a new status or settlement is a
//! change in this file (and the enums) plus its tests. What an operator may do to an
//! invoice (void it, retry it, resolve it) is [`super::Action`]'s.

use chrono::NaiveDateTime;
use strum::{EnumIter, IntoStaticStr};

use super::{InvoiceStatus, Settlement};

/// Where a transition leaves the invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Status(InvoiceStatus),
    /// Back to where it waits for a run, by its own row: `past_due` once it has been
    /// declined softly, else `pending` ([`InvoiceStatus::waiting`]).
    Waiting,
}

impl Target {
    /// The status this target is for an invoice with `attempt_count` soft declines.
    pub fn resolve(self, attempt_count: i32) -> InvoiceStatus {
        match self {
            Target::Status(status) => status,
            Target::Waiting => InvoiceStatus::waiting(attempt_count),
        }
    }
}

/// What a transition does to one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write<T> {
    Keep,
    Clear,
    Set(T),
}

impl<T> Write<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Write<U> {
        match self {
            Write::Keep => Write::Keep,
            Write::Clear => Write::Clear,
            Write::Set(value) => Write::Set(f(value)),
        }
    }
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
    pub fn admits(self, from: InvoiceStatus, to: Target) -> bool {
        match self {
            Guard::Claim => from == InvoiceStatus::Processing,
            Guard::NotYet => to != Target::Status(from),
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
    pub to: Target,
    pub guard: Guard,
    /// The charge: `charge_id` is set and `paid_at` stamped; `None` leaves both.
    pub charge: Option<&'a str>,
    pub failure_reason: Write<&'a str>,
    /// Why a person should look at it; cleared once it is paid or failed.
    pub attention: Write<&'a str>,
    /// The soft declines counted so far (`Some` sets the count); dunning's, never reset.
    pub attempt_count: Option<i32>,
    /// The first soft decline, which the dunning schedule counts from.
    pub past_due_since: Write<NaiveDateTime>,
    /// When a past-due invoice is tried again; cleared once it is settled for good.
    pub next_attempt_at: Write<NaiveDateTime>,
    pub counts_as: RunResult,
}

impl<'a> Transition<'a> {
    /// Paid with `charge_id`, whoever holds the claim now.
    pub const fn paid(charge_id: &'a str) -> Self {
        Transition {
            charge: Some(charge_id),
            guard: Guard::NotYet,
            counts_as: RunResult::Paid,
            ..Transition::settled_for_good(InvoiceStatus::Paid, Write::Clear)
        }
    }

    /// Into `to` with the claim, never to be tried again: attention and the next attempt
    /// cleared.
    const fn settled_for_good(to: InvoiceStatus, failure_reason: Write<&'a str>) -> Self {
        Transition {
            to: Target::Status(to),
            guard: Guard::Claim,
            charge: None,
            failure_reason,
            attention: Write::Clear,
            attempt_count: None,
            past_due_since: Write::Keep,
            next_attempt_at: Write::Clear,
            counts_as: RunResult::Failed,
        }
    }
}

/// Back to where it waits (pending, or past due once declined) for a later run: a
/// settlement to retry later, and the claims a failed run or a stopping process hands
/// back. A past-due invoice keeps its next attempt, due already: the next run tries it.
pub const HAND_BACK: Transition<'static> = Transition {
    to: Target::Waiting,
    guard: Guard::Claim,
    charge: None,
    failure_reason: Write::Keep,
    attention: Write::Keep,
    attempt_count: None,
    past_due_since: Write::Keep,
    next_attempt_at: Write::Keep,
    counts_as: RunResult::RetryLater,
};

impl Settlement {
    /// What this settlement writes, where its guard admits it.
    pub fn transition(&self) -> Transition<'_> {
        match self {
            Settlement::Paid { charge_id } => Transition::paid(charge_id),
            Settlement::Failed { reason, .. } => {
                Transition::settled_for_good(InvoiceStatus::Failed, Write::Set(reason))
            }
            // Counted as handed back: a later run tries it again.
            Settlement::PastDue {
                reason,
                attempt_count,
                next_attempt_at,
                since,
            } => Transition {
                to: Target::Status(InvoiceStatus::PastDue),
                failure_reason: Write::Set(reason),
                attention: Write::Clear,
                attempt_count: Some(*attempt_count),
                past_due_since: Write::Set(*since),
                next_attempt_at: Write::Set(*next_attempt_at),
                ..HAND_BACK
            },
            Settlement::Uncollectible {
                reason,
                attempt_count,
            } => Transition {
                attempt_count: Some(*attempt_count),
                ..Transition::settled_for_good(InvoiceStatus::Uncollectible, Write::Set(reason))
            },
            Settlement::RetryLater { .. } => HAND_BACK,
            Settlement::Attention { reason } => Transition {
                attention: Write::Set(reason),
                ..HAND_BACK
            },
            Settlement::Released { .. } => Transition {
                attention: Write::Clear,
                ..HAND_BACK
            },
        }
    }

    /// Why the invoice was not paid; `None` for a payment.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Settlement::Paid { .. } => None,
            Settlement::Failed { reason, .. }
            | Settlement::PastDue { reason, .. }
            | Settlement::Uncollectible { reason, .. }
            | Settlement::RetryLater { reason }
            | Settlement::Attention { reason }
            | Settlement::Released { reason } => Some(reason),
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
    use api_contract::DeclineClass;
    use strum::IntoEnumIterator;

    use InvoiceStatus::{Failed, Paid, PastDue, Pending, Processing, Uncollectible, Void};

    fn at(minute: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_796_083_200 + minute * 60, 0)
            .expect("a time")
            .naive_utc()
    }

    /// One settlement of each kind, with values.
    fn each_settlement() -> Vec<Settlement> {
        let reason = "why".to_owned();
        Settlement::iter()
            .map(|s| match s {
                Settlement::Paid { .. } => Settlement::Paid {
                    charge_id: "ch_1".into(),
                },
                Settlement::Failed { .. } => Settlement::Failed {
                    reason: reason.clone(),
                    decline: Some(DeclineClass::Hard),
                },
                Settlement::PastDue { .. } => Settlement::PastDue {
                    reason: reason.clone(),
                    attempt_count: 2,
                    next_attempt_at: at(5),
                    since: at(0),
                },
                Settlement::Uncollectible { .. } => Settlement::Uncollectible {
                    reason: reason.clone(),
                    attempt_count: 4,
                },
                Settlement::RetryLater { .. } => Settlement::RetryLater {
                    reason: reason.clone(),
                },
                Settlement::Attention { .. } => Settlement::Attention {
                    reason: reason.clone(),
                },
                Settlement::Released { .. } => Settlement::Released {
                    reason: reason.clone(),
                },
            })
            .collect()
    }

    /// The state machine, written out as a table: every settlement from every status. No
    /// wildcard, so a new status or settlement does not compile until its row is here.
    fn expected(from: InvoiceStatus, s: &Settlement) -> Option<Target> {
        let to = |status| Some(Target::Status(status));
        match (s, from) {
            // A payment is recorded whoever holds the claim, once: also on a void invoice,
            // whose charge was made before it was voided (an answer lost then, found by a
            // replay or a lookup). The record says what the provider did.
            (
                Settlement::Paid { .. },
                Pending | Processing | Failed | PastDue | Uncollectible | Void,
            ) => to(Paid),
            (Settlement::Paid { .. }, Paid) => None,
            (Settlement::Failed { .. }, Processing) => to(Failed),
            (Settlement::PastDue { .. }, Processing) => to(PastDue),
            (Settlement::Uncollectible { .. }, Processing) => to(Uncollectible),
            (
                Settlement::RetryLater { .. }
                | Settlement::Attention { .. }
                | Settlement::Released { .. },
                Processing,
            ) => Some(Target::Waiting),
            (
                Settlement::Failed { .. }
                | Settlement::PastDue { .. }
                | Settlement::Uncollectible { .. }
                | Settlement::RetryLater { .. }
                | Settlement::Attention { .. }
                | Settlement::Released { .. },
                Pending | Paid | Failed | PastDue | Uncollectible | Void,
            ) => None,
        }
    }

    #[test]
    fn every_status_and_settlement() {
        let mut pairs = 0;
        for from in InvoiceStatus::iter() {
            for s in each_settlement() {
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
    fn a_hand_back_returns_to_where_the_invoice_waits() {
        assert_eq!(HAND_BACK.to.resolve(0), Pending);
        assert_eq!(HAND_BACK.to.resolve(1), PastDue);
        assert_eq!(HAND_BACK.to.resolve(3), PastDue);
        for status in InvoiceStatus::iter() {
            assert_eq!(Target::Status(status).resolve(2), status);
        }
    }

    #[test]
    fn what_each_settlement_writes() {
        for s in each_settlement() {
            let want = match &s {
                Settlement::Paid { .. } => Transition {
                    to: Target::Status(Paid),
                    guard: Guard::NotYet,
                    charge: Some("ch_1"),
                    failure_reason: Write::Clear,
                    attention: Write::Clear,
                    attempt_count: None,
                    past_due_since: Write::Keep,
                    next_attempt_at: Write::Clear,
                    counts_as: RunResult::Paid,
                },
                Settlement::Failed { .. } => Transition {
                    to: Target::Status(Failed),
                    guard: Guard::Claim,
                    charge: None,
                    failure_reason: Write::Set("why"),
                    attention: Write::Clear,
                    attempt_count: None,
                    past_due_since: Write::Keep,
                    next_attempt_at: Write::Clear,
                    counts_as: RunResult::Failed,
                },
                // Tried again later: counted as handed back.
                Settlement::PastDue { .. } => Transition {
                    to: Target::Status(PastDue),
                    guard: Guard::Claim,
                    charge: None,
                    failure_reason: Write::Set("why"),
                    attention: Write::Clear,
                    attempt_count: Some(2),
                    past_due_since: Write::Set(at(0)),
                    next_attempt_at: Write::Set(at(5)),
                    counts_as: RunResult::RetryLater,
                },
                Settlement::Uncollectible { .. } => Transition {
                    to: Target::Status(Uncollectible),
                    guard: Guard::Claim,
                    charge: None,
                    failure_reason: Write::Set("why"),
                    attention: Write::Clear,
                    attempt_count: Some(4),
                    past_due_since: Write::Keep,
                    next_attempt_at: Write::Clear,
                    counts_as: RunResult::Failed,
                },
                // The failure reason of an earlier run stays, and so does any attention and
                // the dunning state (a past-due invoice's next attempt is due already).
                Settlement::RetryLater { .. } => Transition {
                    to: Target::Waiting,
                    guard: Guard::Claim,
                    charge: None,
                    failure_reason: Write::Keep,
                    attention: Write::Keep,
                    attempt_count: None,
                    past_due_since: Write::Keep,
                    next_attempt_at: Write::Keep,
                    counts_as: RunResult::RetryLater,
                },
                Settlement::Attention { .. } => Transition {
                    attention: Write::Set("why"),
                    ..HAND_BACK
                },
                // Nothing was charged under its key: a hand-back that clears the attention.
                Settlement::Released { .. } => Transition {
                    to: Target::Waiting,
                    guard: Guard::Claim,
                    charge: None,
                    failure_reason: Write::Keep,
                    attention: Write::Clear,
                    attempt_count: None,
                    past_due_since: Write::Keep,
                    next_attempt_at: Write::Keep,
                    counts_as: RunResult::RetryLater,
                },
            };
            assert_eq!(s.transition(), want, "{s:?}");
            assert_eq!(
                s.reason().is_some(),
                want.to != Target::Status(Paid),
                "{s:?}"
            );
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
        for s in each_settlement() {
            let t = s.transition();
            for declined_before in [0, 2] {
                let to = t.to.resolve(declined_before);
                assert_ne!(to, Processing, "{s:?} leaves the invoice claimed");
                assert_ne!(to, Void, "{s:?}: only an operator voids an invoice");
                assert_eq!(t.charge.is_some(), to == Paid, "{s:?}");
                if matches!(to, Failed | Uncollectible) || t.to == Target::Status(PastDue) {
                    assert!(matches!(t.failure_reason, Write::Set(_)), "{s:?}");
                }
                if !matches!(to, Pending | PastDue) {
                    assert_eq!(t.attention, Write::Clear, "{s:?} keeps its attention");
                    assert_eq!(t.next_attempt_at, Write::Clear, "{s:?} stays due");
                }
                let counts_as = match to {
                    Paid => RunResult::Paid,
                    // No settlement voids (only an operator does): listed for the match.
                    Failed | Uncollectible | Void => RunResult::Failed,
                    Pending | PastDue | Processing => RunResult::RetryLater,
                };
                assert_eq!(t.counts_as, counts_as, "{s:?}");
            }
        }
    }

    #[test]
    fn result_labels_stay_what_they_were() {
        let labels: Vec<_> = RunResult::iter().map(RunResult::as_str).collect();
        assert_eq!(labels, ["paid", "failed", "retry_later"]);
    }
}
