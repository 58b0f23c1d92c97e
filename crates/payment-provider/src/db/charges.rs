//! Queries on `charges`, the ledger of money that moved.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::AnyConnection;
use super::schema::charges;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = charges)]
pub struct Charge {
    pub id: String,
    pub caller: String,
    pub idempotency_key: String,
    pub invoice_id: String,
    pub customer_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: String,
    pub created_at: NaiveDateTime,
}

pub fn insert(conn: &mut AnyConnection, charge: &Charge) -> QueryResult<()> {
    diesel::insert_into(charges::table)
        .values(charge)
        .execute(conn)
        .map(|_| ())
}

/// A charge made by `caller` (callers see only their own charges).
pub fn find(conn: &mut AnyConnection, caller: &str, id: &str) -> QueryResult<Option<Charge>> {
    charges::table
        .filter(charges::id.eq(id))
        .filter(charges::caller.eq(caller))
        .select(Charge::as_select())
        .first(conn)
        .optional()
}

/// The whole ledger in creation order, for audits and tests.
pub fn all(conn: &mut AnyConnection) -> QueryResult<Vec<Charge>> {
    charges::table
        .order((charges::created_at, charges::id))
        .select(Charge::as_select())
        .load(conn)
}
