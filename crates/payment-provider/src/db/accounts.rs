//! Queries on `accounts`.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::accounts;
use super::{AnyConnection, is_unique_violation};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = accounts)]
pub struct Account {
    pub customer_id: String,
    pub currency: String,
    pub balance_minor: i64,
    pub updated_at: NaiveDateTime,
}

pub fn find(conn: &mut AnyConnection, customer_id: &str) -> QueryResult<Option<Account>> {
    accounts::table
        .find(customer_id)
        .select(Account::as_select())
        .first(conn)
        .optional()
}

/// Takes `amount` from the account if it is in `currency` and holds enough; one statement,
/// so concurrent debits can never overdraw. Returns whether the debit happened.
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
