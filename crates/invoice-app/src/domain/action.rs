//! What an operator may do to one invoice (`POST /invoices/{id}/void|retry|resolve`), from
//! which status, and why a person gave: the rules the service checks and the SQL guards
//! (`db::invoices::void`, `claim_one`, `dismiss`) both follow.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use strum::{EnumIter, IntoStaticStr};

use super::InvoiceStatus;

/// An operator's action, as `invoice_actions.action` stores it (and the API shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, EnumIter, IntoStaticStr)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum Action {
    /// Cancelled: `void`, never charged again.
    Void,
    /// Charged now, in a pay run of its own that takes only this invoice.
    Retry,
    /// Its attention cleared by a person who checked it: it waits for the next run again.
    Dismiss,
}

/// Why an action does not apply to an invoice as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A run is charging it: its answer decides first; try again once it is settled.
    Processing,
    /// Paid, failed, uncollectible or void: nothing is left to act on.
    Settled(InvoiceStatus),
    /// A resolve of an invoice that needs no attention.
    NoAttention,
    /// A retry of an invoice that needs attention: the same call would get the same answer
    /// (a reused key, a refused credential), so a person resolves it first.
    NeedsAttention,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Processing => f.write_str(
                "the invoice is being charged by a pay run; try again once it is settled",
            ),
            Refusal::Settled(status) => write!(f, "the invoice is {status}: nothing to act on"),
            Refusal::NoAttention => {
                f.write_str("the invoice needs no attention: nothing to resolve")
            }
            Refusal::NeedsAttention => f.write_str(
                "the invoice needs attention: resolve it first (POST /invoices/{id}/resolve)",
            ),
        }
    }
}

impl Action {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether it applies to an invoice in `from`, marked for attention or not. Every
    /// action needs an invoice waiting for a run (pending or past due): one a run holds is
    /// the run's until it settles, and a settled one stays as it is.
    pub fn admits(self, from: InvoiceStatus, attention: bool) -> Result<(), Refusal> {
        use InvoiceStatus::{Failed, Paid, PastDue, Pending, Processing, Uncollectible, Void};
        match (self, from) {
            (_, Processing) => Err(Refusal::Processing),
            (_, Paid | Failed | Uncollectible | Void) => Err(Refusal::Settled(from)),
            (Action::Dismiss, Pending | PastDue) if !attention => Err(Refusal::NoAttention),
            (Action::Retry, Pending | PastDue) if attention => Err(Refusal::NeedsAttention),
            (Action::Void | Action::Retry | Action::Dismiss, Pending | PastDue) => Ok(()),
        }
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        super::parse_variant("action", s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a person acted, as the audit trail keeps it: 1 to [`Reason::MAX`] characters of
/// text, not only blanks, without control characters (it ends up in logs and consoles).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    pub const MAX: usize = 500;

    pub fn parse(text: String) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("reason is empty: say why".into());
        }
        if text.chars().count() > Self::MAX {
            return Err(format!("reason is longer than {} characters", Self::MAX));
        }
        if text.chars().any(char::is_control) {
            return Err("reason may not contain control characters".into());
        }
        Ok(Reason(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    use InvoiceStatus::{Failed, Paid, PastDue, Pending, Processing, Uncollectible, Void};

    /// Every action from every status, with and without attention, written out: no
    /// wildcard, so a new status or action does not compile until its row is here.
    fn expected(action: Action, from: InvoiceStatus, attention: bool) -> Result<(), Refusal> {
        match (action, from, attention) {
            (_, Processing, _) => Err(Refusal::Processing),
            (_, Paid | Failed | Uncollectible | Void, _) => Err(Refusal::Settled(from)),
            (Action::Void, Pending | PastDue, _) => Ok(()),
            (Action::Retry, Pending | PastDue, false) => Ok(()),
            (Action::Retry, Pending | PastDue, true) => Err(Refusal::NeedsAttention),
            (Action::Dismiss, Pending | PastDue, true) => Ok(()),
            (Action::Dismiss, Pending | PastDue, false) => Err(Refusal::NoAttention),
        }
    }

    #[test]
    fn every_action_from_every_status() {
        let mut pairs = 0;
        for action in Action::iter() {
            for from in InvoiceStatus::iter() {
                for attention in [false, true] {
                    pairs += 1;
                    assert_eq!(
                        action.admits(from, attention),
                        expected(action, from, attention),
                        "{action} from {from}, attention {attention}"
                    );
                    // Only a waiting invoice is ever acted on.
                    if action.admits(from, attention).is_ok() {
                        assert!(InvoiceStatus::WAITING.contains(&from), "{action} {from}");
                    }
                }
            }
        }
        assert_eq!(
            pairs,
            Action::iter().count() * InvoiceStatus::iter().count() * 2
        );
    }

    #[test]
    fn stored_texts_stay_what_they_were() {
        let texts: Vec<_> = Action::iter().map(Action::as_str).collect();
        assert_eq!(texts, ["void", "retry", "dismiss"]);
        for a in Action::iter() {
            assert_eq!(a.as_str().parse(), Ok(a));
            assert_eq!(
                serde_json::to_value(a).expect("serialises"),
                serde_json::Value::from(a.as_str())
            );
        }
    }

    #[test]
    fn reasons_are_short_printable_text() {
        assert!(Reason::parse("customer cancelled the order".into()).is_ok());
        assert!(Reason::parse("x".repeat(Reason::MAX)).is_ok());
        assert!(
            Reason::parse("é".repeat(Reason::MAX)).is_ok(),
            "characters, not bytes"
        );
        for bad in ["", "   ", "line\nbreak", "bell\u{7}", "c1\u{85}"] {
            assert!(Reason::parse(bad.into()).is_err(), "{bad:?}");
        }
        assert!(Reason::parse("x".repeat(Reason::MAX + 1)).is_err());
    }
}
