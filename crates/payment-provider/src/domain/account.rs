//! An account's status and the operator's actions on it: one enum and one pure transition
//! function; the SQL (`db::accounts`), the declines and the CLI follow from here.

use std::str::FromStr;

use strum::{EnumIter, IntoStaticStr};

/// Where an account stands, as `accounts.status` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum AccountStatus {
    /// Charged while its balance covers the charge.
    Active,
    /// Temporarily blocked (a review, a dispute, the bank's own hold): charges are declined
    /// `try_again_later` until an operator releases it. Funds may still arrive.
    OnHold,
    /// Closed for good: charges are declined `account_closed`, no funds are taken in.
    Closed,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl FromStr for AccountStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use strum::IntoEnumIterator;
        AccountStatus::iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown account status {:?}: expected active, on_hold or closed",
                    s.chars().take(32).collect::<String>()
                )
            })
    }
}

/// What an operator may do to an account's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter)]
pub enum AccountAction {
    Hold,
    Release,
    Close,
}

/// The status `action` leads to from `from`, or why it is refused. Asking for the status
/// the account already has changes nothing and is no error, so an operator may repeat a
/// command whose answer was lost. A closed account stays closed.
pub fn transition(from: AccountStatus, action: AccountAction) -> Result<AccountStatus, String> {
    use AccountAction::{Close, Hold, Release};
    use AccountStatus::{Active, Closed, OnHold};
    match (action, from) {
        (Hold, Active | OnHold) => Ok(OnHold),
        (Release, Active | OnHold) => Ok(Active),
        (Close, Active | OnHold | Closed) => Ok(Closed),
        (Hold | Release, Closed) => Err("the account is closed, and stays closed".to_owned()),
    }
}

/// Whether money may be paid into an account in this status.
pub fn takes_funds(status: AccountStatus) -> bool {
    status != AccountStatus::Closed
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    use AccountAction::{Close, Hold, Release};
    use AccountStatus::{Active, Closed, OnHold};

    /// Every action from every status, written out: no wildcard, so a new status or action
    /// does not compile until its row is here.
    fn expected(action: AccountAction, from: AccountStatus) -> Option<AccountStatus> {
        match (action, from) {
            (Hold, Active) | (Hold, OnHold) => Some(OnHold),
            (Hold, Closed) => None,
            (Release, Active) | (Release, OnHold) => Some(Active),
            (Release, Closed) => None,
            (Close, Active) | (Close, OnHold) | (Close, Closed) => Some(Closed),
        }
    }

    #[test]
    fn every_status_and_action() {
        for from in AccountStatus::iter() {
            for action in AccountAction::iter() {
                assert_eq!(
                    transition(from, action).ok(),
                    expected(action, from),
                    "{action:?} from {from:?}"
                );
            }
        }
        assert!(takes_funds(Active) && takes_funds(OnHold) && !takes_funds(Closed));
    }

    /// The text each status is stored as (the migration's CHECK lists the same).
    #[test]
    fn stored_texts() {
        let texts: Vec<_> = AccountStatus::iter().map(AccountStatus::as_str).collect();
        assert_eq!(texts, ["active", "on_hold", "closed"]);
        for status in AccountStatus::iter() {
            assert_eq!(status.as_str().parse(), Ok(status));
        }
        assert!("frozen".parse::<AccountStatus>().is_err());
    }
}
