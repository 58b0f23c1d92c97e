use api_contract::{Currency, CustomerId, ErrorCode, Problem};

use super::AccountStatus;

/// Why a valid charge was refused. A decline is a final answer for its key: it is stored
/// and replayed like a success, so a retry can never turn it into a second attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decline {
    CustomerNotFound(CustomerId),
    CurrencyMismatch {
        account: String,
        requested: Currency,
    },
    InsufficientFunds(CustomerId),
    /// The account is on hold.
    TryAgainLater(CustomerId),
    AccountClosed(CustomerId),
}

/// What the charge found of the account it could not debit.
#[derive(Debug, Clone, Copy)]
pub struct AccountSeen<'a> {
    pub status: AccountStatus,
    pub currency: &'a str,
}

impl Decline {
    /// Why `customer`'s account (`None`: there is none) was not debited `requested`. Hard
    /// reasons come first: a customer who cannot fix the charge by waiting must not be told
    /// to try again. With none of them, the balance fell short.
    pub fn for_account(
        customer: &CustomerId,
        requested: Currency,
        account: Option<AccountSeen<'_>>,
    ) -> Decline {
        let Some(account) = account else {
            return Decline::CustomerNotFound(customer.clone());
        };
        match account.status {
            AccountStatus::Closed => Decline::AccountClosed(customer.clone()),
            _ if account.currency != requested.code() => Decline::CurrencyMismatch {
                account: account.currency.to_owned(),
                requested,
            },
            AccountStatus::OnHold => Decline::TryAgainLater(customer.clone()),
            AccountStatus::Active => Decline::InsufficientFunds(customer.clone()),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Decline::CustomerNotFound(_) => ErrorCode::CustomerNotFound,
            Decline::CurrencyMismatch { .. } => ErrorCode::CurrencyMismatch,
            Decline::InsufficientFunds(_) => ErrorCode::InsufficientFunds,
            Decline::TryAgainLater(_) => ErrorCode::TryAgainLater,
            Decline::AccountClosed(_) => ErrorCode::AccountClosed,
        }
    }

    /// The problem body; the balance is never disclosed.
    pub fn problem(&self) -> Problem {
        match self {
            Decline::CustomerNotFound(id) => Problem::new(
                404,
                self.code(),
                "Customer not found",
                Some(format!("no account for customer {id}")),
            ),
            Decline::CurrencyMismatch { account, requested } => Problem::new(
                422,
                self.code(),
                "Currency mismatch",
                Some(format!(
                    "the account is kept in {account}, the charge is in {requested}"
                )),
            ),
            Decline::InsufficientFunds(id) => Problem::new(
                402,
                self.code(),
                "Insufficient funds",
                Some(format!(
                    "the account of customer {id} cannot cover the charge"
                )),
            ),
            // 402 like every refusal of the account's money (as Stripe answers declines).
            Decline::TryAgainLater(id) => Problem::new(
                402,
                self.code(),
                "Try again later",
                Some(format!(
                    "the account of customer {id} cannot be charged for now; try again later"
                )),
            ),
            Decline::AccountClosed(id) => Problem::new(
                402,
                self.code(),
                "Account closed",
                Some(format!("the account of customer {id} is closed")),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_contract::DeclineClass::{Hard, Soft};

    fn decide(status: AccountStatus, currency: &str) -> Decline {
        let customer = CustomerId::parse("C001").expect("valid");
        Decline::for_account(
            &customer,
            Currency::Eur,
            Some(AccountSeen { status, currency }),
        )
    }

    #[test]
    fn hard_reasons_come_before_soft_ones() {
        use AccountStatus::{Active, Closed, OnHold};
        let codes = |status, currency| decide(status, currency).code();
        assert_eq!(codes(Active, "EUR"), ErrorCode::InsufficientFunds);
        assert_eq!(codes(OnHold, "EUR"), ErrorCode::TryAgainLater);
        assert_eq!(codes(Closed, "EUR"), ErrorCode::AccountClosed);
        assert_eq!(codes(Active, "DKK"), ErrorCode::CurrencyMismatch);
        // A held account in another currency will never take this charge: not "try again".
        assert_eq!(codes(OnHold, "DKK"), ErrorCode::CurrencyMismatch);
        assert_eq!(codes(Closed, "DKK"), ErrorCode::AccountClosed);
        let nobody = Decline::for_account(
            &CustomerId::parse("C404").expect("valid"),
            Currency::Eur,
            None,
        );
        assert_eq!(nobody.code(), ErrorCode::CustomerNotFound);
    }

    /// Each decline with its status and the contract's class, as the README's table gives
    /// them: every decline the provider answers is one the contract classifies.
    #[test]
    fn every_decline_has_its_status_and_class() {
        let id = CustomerId::parse("C001").expect("valid");
        for (decline, status, class) in [
            (Decline::InsufficientFunds(id.clone()), 402, Soft),
            (Decline::TryAgainLater(id.clone()), 402, Soft),
            (Decline::AccountClosed(id.clone()), 402, Hard),
            (Decline::CustomerNotFound(id.clone()), 404, Hard),
            (
                Decline::CurrencyMismatch {
                    account: "DKK".into(),
                    requested: Currency::Eur,
                },
                422,
                Hard,
            ),
        ] {
            let problem = decline.problem();
            assert_eq!(problem.status, status, "{decline:?}");
            assert_eq!(problem.code, decline.code(), "{decline:?}");
            assert_eq!(decline.code().decline_class(), Some(class), "{decline:?}");
        }
    }
}
