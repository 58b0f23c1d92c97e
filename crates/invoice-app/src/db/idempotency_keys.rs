//! Queries on `idempotency_keys`: the first answer to a client's keyed request, replayed to
//! its retries. A row is written in the transaction of the work it answers for, so it
//! exists exactly when that work does (see `invoices::create_once`).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::AnyConnection;
use super::schema::idempotency_keys::{self as keys, dsl};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = keys)]
pub struct KeyRow {
    /// Whose key it is: `Principal::name()` (`jwt:<sub>`, `key:<client>`, `dev`).
    pub client: String,
    pub idempotency_key: String,
    /// The fingerprint of the request the key was first used with.
    pub request_hash: String,
    pub response_status: i32,
    pub response_location: Option<String>,
    pub response_body: String,
    pub created_at: NaiveDateTime,
}

pub fn find(conn: &mut AnyConnection, client: &str, key: &str) -> QueryResult<Option<KeyRow>> {
    keys::table
        .find((client, key))
        .select(KeyRow::as_select())
        .first(conn)
        .optional()
}

/// Does `work` and stores the key with its answer, in one transaction: the key exists
/// exactly when the work does. Fails with a unique violation, having done nothing, when the
/// client's key exists already.
pub fn insert_with<T>(
    conn: &mut AnyConnection,
    row: &KeyRow,
    work: impl FnOnce(&mut AnyConnection) -> QueryResult<T>,
) -> QueryResult<T> {
    conn.transaction(|c| {
        let done = work(c)?;
        diesel::insert_into(keys::table).values(row).execute(c)?;
        Ok(done)
    })
}

/// Deletes the oldest keys created before `before`, about `limit` of them (keys sharing
/// the last one's timestamp go with it): one bounded statement, so housekeeping never holds
/// a long delete. Returns how many went.
pub fn prune(conn: &mut AnyConnection, before: NaiveDateTime, limit: i64) -> QueryResult<usize> {
    let last: Option<NaiveDateTime> = keys::table
        .filter(dsl::created_at.lt(before))
        .select(dsl::created_at)
        .order(dsl::created_at)
        .offset((limit - 1).max(0))
        .first(conn)
        .optional()?;
    // Fewer than `limit` expired: all of them.
    let upto = last.unwrap_or(before);
    diesel::delete(
        keys::table
            .filter(dsl::created_at.lt(before))
            .filter(dsl::created_at.le(upto)),
    )
    .execute(conn)
}

pub fn count(conn: &mut AnyConnection) -> QueryResult<i64> {
    keys::table.count().get_result(conn)
}
