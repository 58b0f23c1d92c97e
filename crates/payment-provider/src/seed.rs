//! Start-up data: demo accounts funded so that every demo invoice pays, or a JSON file of
//! accounts. Accounts that exist are left as they are, so restarts never refill balances.

use std::path::Path;

use anyhow::Context;
use api_contract::{AccountResponse, CustomerId, DEMO_CUSTOMERS, Money};
use chrono::Utc;

use crate::config::Seed;
use crate::db::{self, DbPool, accounts};
use crate::domain::AccountStatus;

/// Enough for thousands of demo invoices in every currency.
const DEMO_BALANCE: i64 = 10_000_000_000;

pub fn demo_accounts() -> Vec<AccountResponse> {
    DEMO_CUSTOMERS
        .iter()
        .filter_map(|(id, currency)| {
            Some(AccountResponse {
                customer_id: CustomerId::parse(*id).ok()?,
                balance: Money::new(DEMO_BALANCE, *currency).ok()?,
            })
        })
        .collect()
}

pub fn read_file(path: &Path) -> anyhow::Result<Vec<AccountResponse>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading seed file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "seed file {}: expected [{{\"customer_id\":…,\"balance\":{{\"minor_units\":…,\"currency\":…}}}}]",
            path.display()
        )
    })
}

/// Creates the missing accounts of `seed`; returns how many were created.
pub async fn apply(pool: &DbPool, seed: &Seed) -> anyhow::Result<usize> {
    let wanted = match seed {
        Seed::None => return Ok(0),
        Seed::Demo => demo_accounts(),
        Seed::File(path) => read_file(path)?,
    };
    insert(pool, wanted).await
}

pub async fn insert(pool: &DbPool, wanted: Vec<AccountResponse>) -> anyhow::Result<usize> {
    let now = Utc::now().naive_utc();
    let rows: Vec<accounts::Account> = wanted
        .into_iter()
        .map(|a| accounts::Account {
            customer_id: a.customer_id.to_string(),
            currency: a.balance.currency().code().to_owned(),
            balance_minor: a.balance.minor_units(),
            updated_at: now,
            status: AccountStatus::Active,
        })
        .collect();
    db::run(pool, move |c| {
        accounts::insert_missing(c, &rows).map_err(anyhow::Error::from)
    })
    .await
}
