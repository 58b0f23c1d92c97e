//! Queries on `accounts`.

use chrono::NaiveDateTime;
use diesel::PgConnection;
use diesel::prelude::*;

use super::schema::accounts;
use super::{AnyConnection, is_unique_violation};
use crate::domain::AccountStatus;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = accounts)]
pub struct Account {
    pub customer_id: String,
    pub currency: String,
    pub balance_minor: i64,
    pub updated_at: NaiveDateTime,
    pub status: AccountStatus,
}

pub fn find(conn: &mut AnyConnection, customer_id: &str) -> QueryResult<Option<Account>> {
    accounts::table
        .find(customer_id)
        .select(Account::as_select())
        .first(conn)
        .optional()
}

/// Waits for the account's row lock on PostgreSQL and holds it until the transaction ends:
/// the row stays as it is while the caller acts on it (a missing account locks nothing).
pub fn lock(conn: &mut PgConnection, customer_id: &str) -> QueryResult<()> {
    accounts::table
        .find(customer_id)
        .select(accounts::customer_id)
        .for_update()
        .load::<String>(conn)
        .map(drop)
}

/// Takes `amount` from the account if it is active, in `currency` and holds enough; one
/// statement, so concurrent debits can never overdraw, nor debit an account closed or held
/// meanwhile. Returns whether the debit happened.
pub fn debit(
    conn: &mut AnyConnection,
    customer_id: &str,
    currency: &str,
    amount: i64,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let updated = diesel::update(
        accounts::table
            .filter(accounts::customer_id.eq(customer_id))
            .filter(accounts::status.eq(AccountStatus::Active))
            .filter(accounts::currency.eq(currency))
            .filter(accounts::balance_minor.ge(amount)),
    )
    .set((
        accounts::balance_minor.eq(accounts::balance_minor - amount),
        accounts::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(updated == 1)
}

/// Adds `amount` to the account if it is in `currency`, in a status that `takes` funds, and
/// the sum stays within a BIGINT. One statement, so it adds up with concurrent debits.
/// Returns whether the money went in; the caller reads the account to say why not.
pub fn credit(
    conn: &mut AnyConnection,
    customer_id: &str,
    currency: &str,
    amount: i64,
    takes: &[AccountStatus],
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let updated = diesel::update(
        accounts::table
            .filter(accounts::customer_id.eq(customer_id))
            .filter(accounts::status.eq_any(takes))
            .filter(accounts::currency.eq(currency))
            .filter(accounts::balance_minor.le(i64::MAX.saturating_sub(amount))),
    )
    .set((
        accounts::balance_minor.eq(accounts::balance_minor + amount),
        accounts::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(updated == 1)
}

/// Moves the account from status `from` to `to`; false when it was no longer in `from`
/// (changed meanwhile), so a decision taken on a stale read is never written.
pub fn set_status(
    conn: &mut AnyConnection,
    customer_id: &str,
    from: AccountStatus,
    to: AccountStatus,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let updated = diesel::update(
        accounts::table
            .filter(accounts::customer_id.eq(customer_id))
            .filter(accounts::status.eq(from)),
    )
    .set((accounts::status.eq(to), accounts::updated_at.eq(now)))
    .execute(conn)?;
    Ok(updated == 1)
}

/// Creates the accounts that do not exist yet and leaves existing ones (and their balances)
/// alone, so seeding on every start-up is safe. Returns how many were created.
pub fn insert_missing(conn: &mut AnyConnection, new: &[Account]) -> QueryResult<usize> {
    let mut created = 0;
    for account in new {
        match diesel::insert_into(accounts::table)
            .values(account)
            .execute(conn)
        {
            Ok(n) => created += n,
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}
