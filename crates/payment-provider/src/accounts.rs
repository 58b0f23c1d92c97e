//! Operator actions on accounts: paying money in, holding, releasing and closing. The
//! `payment-provider accounts …` command runs them against the provider's database, so only
//! whoever holds its credential can; nothing here is served over HTTP, where a caller's
//! token could use it (a caller may charge an account, never fund or reopen one).

use std::fmt;

use api_contract::{CustomerId, Money};
use chrono::Utc;
use strum::IntoEnumIterator;

use crate::db::{self, AnyConnection, DbError, DbPool, accounts};
use crate::domain::{self, AccountAction, AccountStatus};

/// Why an operator action did nothing.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("no account for customer {0}")]
    NotFound(CustomerId),
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for AccountError {
    fn from(e: diesel::result::Error) -> Self {
        AccountError::Db(e.into())
    }
}

/// An account as an operator sees it, after the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub customer_id: CustomerId,
    pub balance_minor: i64,
    pub currency: String,
    pub status: AccountStatus,
}

impl fmt::Display for AccountView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The stored currency always parses (a charge checks it); printed raw if not.
        let balance = self
            .currency
            .parse()
            .ok()
            .and_then(|c| Money::new(self.balance_minor, c).ok())
            .map_or_else(
                || format!("{} minor units of {}", self.balance_minor, self.currency),
                |m| m.to_string(),
            );
        write!(
            f,
            "customer {}: {balance}, {}",
            self.customer_id,
            self.status.as_str()
        )
    }
}

pub async fn show(pool: &DbPool, customer: CustomerId) -> Result<AccountView, AccountError> {
    db::run(pool, move |c| view(c, &customer)).await
}

/// Pays `amount` into the account: it must be the account's currency (said, never assumed,
/// so 100 meant in euros never lands on a DKK account), and the account not closed.
pub async fn fund(
    pool: &DbPool,
    customer: CustomerId,
    amount: Money,
) -> Result<AccountView, AccountError> {
    if amount.is_zero() {
        return Err(AccountError::Refused(
            "the amount must be above zero".into(),
        ));
    }
    db::run(pool, move |c| {
        let currency = amount.currency().code();
        let takes: Vec<AccountStatus> = AccountStatus::iter()
            .filter(|s| domain::takes_funds(*s))
            .collect();
        let credited = accounts::credit(
            c,
            customer.as_str(),
            currency,
            amount.minor_units(),
            &takes,
            Utc::now().naive_utc(),
        )?;
        let account = view(c, &customer)?;
        if credited {
            tracing::info!(customer_id = %customer, %amount, "funds paid in by an operator");
            return Ok(account);
        }
        Err(AccountError::Refused(
            if !domain::takes_funds(account.status) {
                format!("the account of customer {customer} is closed and takes no funds")
            } else if account.currency != currency {
                format!(
                    "the account of customer {customer} is kept in {}, not {currency}",
                    account.currency
                )
            } else {
                "the balance would grow beyond what an account can hold".to_owned()
            },
        ))
    })
    .await
}

/// Holds, releases or closes the account (see [`domain::transition`]).
pub async fn change_status(
    pool: &DbPool,
    customer: CustomerId,
    action: AccountAction,
) -> Result<AccountView, AccountError> {
    db::run(pool, move |c| {
        // The write is conditional on the status read: a concurrent change makes us read
        // again and decide anew, a few times at most.
        for _ in 0..3 {
            let account = view(c, &customer)?;
            let to = domain::transition(account.status, action).map_err(AccountError::Refused)?;
            if to == account.status {
                return Ok(account);
            }
            let now = Utc::now().naive_utc();
            if accounts::set_status(c, customer.as_str(), account.status, to, now)? {
                tracing::info!(
                    customer_id = %customer,
                    from = account.status.as_str(),
                    to = to.as_str(),
                    "account status changed by an operator"
                );
                return Ok(AccountView {
                    status: to,
                    ..account
                });
            }
        }
        Err(AccountError::Refused(
            "the account kept changing meanwhile; run the command again".into(),
        ))
    })
    .await
}

fn view(c: &mut AnyConnection, customer: &CustomerId) -> Result<AccountView, AccountError> {
    let account = accounts::find(c, customer.as_str())?
        .ok_or_else(|| AccountError::NotFound(customer.clone()))?;
    Ok(AccountView {
        customer_id: customer.clone(),
        balance_minor: account.balance_minor,
        currency: account.currency,
        status: account.status,
    })
}
