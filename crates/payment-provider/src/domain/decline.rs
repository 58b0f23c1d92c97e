use api_contract::{Currency, CustomerId, ErrorCode, Problem};

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
}

impl Decline {
    pub fn code(&self) -> ErrorCode {
        match self {
            Decline::CustomerNotFound(_) => ErrorCode::CustomerNotFound,
            Decline::CurrencyMismatch { .. } => ErrorCode::CurrencyMismatch,
            Decline::InsufficientFunds(_) => ErrorCode::InsufficientFunds,
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
        }
    }
}
