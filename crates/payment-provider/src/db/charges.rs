//! Queries on `charges`, the ledger of money that moved.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::AnyConnection;
use super::schema::charges;
use crate::domain::AccountStatus;

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

/// What [`debit_and_record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Debited, ledger row written, key completed with the response.
    Charged,
    /// The account could not be debited (missing, not active, other currency, too little):
    /// nothing was written.
    NotDebited,
    /// Debited, but the key's claim was lost: the caller must roll back.
    ClaimLost,
}

/// On PostgreSQL, in one statement (three round trips fewer per charge): debits the
/// account if it is active, in the charge's currency and holds enough, writes `charge` to the
/// ledger, and completes the caller's idempotency key with `status` and `body` if the
/// claim `lock_token` still holds. Run it inside the charge's transaction.
pub fn debit_and_record(
    pg: &mut PgConnection,
    charge: &Charge,
    lock_token: &str,
    status: u16,
    body: &str,
) -> QueryResult<Recorded> {
    use diesel::sql_types::{BigInt, Integer, Text, Timestamp};
    #[derive(QueryableByName)]
    struct Counts {
        #[diesel(sql_type = BigInt)]
        charged: i64,
        #[diesel(sql_type = BigInt)]
        completed: i64,
    }
    let counts: Counts = diesel::sql_query(
        "WITH debit AS ( \
             UPDATE accounts SET balance_minor = balance_minor - $1, updated_at = $2 \
             WHERE customer_id = $3 AND status = $13 AND currency = $4 \
               AND balance_minor >= $1 \
             RETURNING customer_id \
         ), charge AS ( \
             INSERT INTO charges (id, caller, idempotency_key, invoice_id, customer_id, \
                                  amount_minor, currency, status, created_at) \
             SELECT $5, $6, $7, $8, customer_id, $1, $4, $9, $2 FROM debit \
             RETURNING id \
         ), completed AS ( \
             UPDATE idempotency_keys \
             SET state = 'completed', response_status = $10, response_body = $11, \
                 completed_at = $2 \
             WHERE caller = $6 AND idempotency_key = $7 AND state = 'in_flight' \
               AND lock_token = $12 AND EXISTS (SELECT 1 FROM charge) \
             RETURNING 1 \
         ) \
         SELECT (SELECT count(*) FROM charge) AS charged, \
                (SELECT count(*) FROM completed) AS completed",
    )
    .bind::<BigInt, _>(charge.amount_minor)
    .bind::<Timestamp, _>(charge.created_at)
    .bind::<Text, _>(&charge.customer_id)
    .bind::<Text, _>(&charge.currency)
    .bind::<Text, _>(&charge.id)
    .bind::<Text, _>(&charge.caller)
    .bind::<Text, _>(&charge.idempotency_key)
    .bind::<Text, _>(&charge.invoice_id)
    .bind::<Text, _>(&charge.status)
    .bind::<Integer, _>(i32::from(status))
    .bind::<Text, _>(body)
    .bind::<Text, _>(lock_token)
    .bind::<Text, _>(AccountStatus::Active.as_str())
    .get_result(pg)?;
    Ok(match (counts.charged, counts.completed) {
        (0, _) => Recorded::NotDebited,
        (_, 0) => Recorded::ClaimLost,
        _ => Recorded::Charged,
    })
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
