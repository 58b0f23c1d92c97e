//! Queries on `idempotency_keys`: one row per caller and key, first `in_flight` (with a
//! lock token), then `completed` with the response that is replayed from then on.

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;

use super::schema::idempotency_keys as keys;
use super::{AnyConnection, is_unique_violation};

const IN_FLIGHT: &str = "in_flight";
const COMPLETED: &str = "completed";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = keys)]
struct KeyRow {
    request_hash: String,
    state: String,
    lock_token: String,
    locked_at: NaiveDateTime,
    response_status: Option<i32>,
    response_body: Option<String>,
}

/// What to do with a request, given its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The key is ours to process; complete it with this token.
    Acquired { lock_token: String },
    /// Processed before: answer with this.
    Replay { status: u16, body: String },
    /// Another request with this key is being processed.
    InFlight,
    /// The key was used with a different body.
    Reused,
}

/// Claims the key for this request, or says why not. The insert runs on its own (outside
/// any transaction) so that a unique violation is an answer, not an aborted transaction.
/// An in-flight claim older than `stale_after` belongs to a request that died; it is taken
/// over, which is safe because nothing was charged unless the claim was completed.
pub fn begin(
    conn: &mut AnyConnection,
    caller: &str,
    key: &str,
    request_hashes: &[String],
    now: NaiveDateTime,
    stale_after: TimeDelta,
) -> QueryResult<Begin> {
    // A new key stores the first (current) fingerprint; a stored one may be any of them.
    let request_hash = request_hashes.first().map_or("", String::as_str);
    let lock_token = uuid::Uuid::new_v4().to_string();
    // A key released between our insert and our read is simply tried again.
    for _ in 0..3 {
        let inserted = diesel::insert_into(keys::table)
            .values((
                keys::caller.eq(caller),
                keys::idempotency_key.eq(key),
                keys::request_hash.eq(request_hash),
                keys::state.eq(IN_FLIGHT),
                keys::lock_token.eq(&lock_token),
                keys::locked_at.eq(now),
            ))
            .execute(conn);
        match inserted {
            Ok(_) => return Ok(Begin::Acquired { lock_token }),
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(e),
        }
        let Some(row) = keys::table
            .find((caller, key))
            .select(KeyRow::as_select())
            .first(conn)
            .optional()?
        else {
            continue;
        };
        if !request_hashes.contains(&row.request_hash) {
            return Ok(Begin::Reused);
        }
        if row.state == COMPLETED {
            let status = row
                .response_status
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(500);
            return Ok(Begin::Replay {
                status,
                body: row.response_body.unwrap_or_default(),
            });
        }
        if row.locked_at > now - stale_after {
            return Ok(Begin::InFlight);
        }
        let taken = diesel::update(
            keys::table
                .find((caller, key))
                .filter(keys::state.eq(IN_FLIGHT))
                .filter(keys::lock_token.eq(&row.lock_token)),
        )
        .set((keys::lock_token.eq(&lock_token), keys::locked_at.eq(now)))
        .execute(conn)?;
        return Ok(if taken == 1 {
            Begin::Acquired { lock_token }
        } else {
            Begin::InFlight
        });
    }
    Ok(Begin::InFlight)
}

/// Stores the response of a processed request. Returns false when the claim was lost
/// (taken over as stale), in which case the caller must roll back its transaction.
pub fn complete(
    conn: &mut AnyConnection,
    caller: &str,
    key: &str,
    lock_token: &str,
    status: u16,
    body: &str,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let updated = diesel::update(
        keys::table
            .find((caller, key))
            .filter(keys::state.eq(IN_FLIGHT))
            .filter(keys::lock_token.eq(lock_token)),
    )
    .set((
        keys::state.eq(COMPLETED),
        keys::response_status.eq(i32::from(status)),
        keys::response_body.eq(body),
        keys::completed_at.eq(now),
    ))
    .execute(conn)?;
    Ok(updated == 1)
}

/// Gives up a claim without an outcome (a transient failure), so a retry processes afresh.
pub fn release(
    conn: &mut AnyConnection,
    caller: &str,
    key: &str,
    lock_token: &str,
) -> QueryResult<()> {
    diesel::delete(
        keys::table
            .find((caller, key))
            .filter(keys::state.eq(IN_FLIGHT))
            .filter(keys::lock_token.eq(lock_token)),
    )
    .execute(conn)
    .map(|_| ())
}

/// What a caller's key holds, for a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Processed: the response a replay gives.
    Completed { status: u16, body: String },
    /// A request with the key is being processed (or died while it was, until a retry takes
    /// its claim over): it may still charge.
    InFlight,
}

/// The key `key` of `caller`, if that caller used it: keys are read by their owner only,
/// as they are claimed.
pub fn find(conn: &mut AnyConnection, caller: &str, key: &str) -> QueryResult<Option<Stored>> {
    let row = keys::table
        .find((caller, key))
        .select(KeyRow::as_select())
        .first(conn)
        .optional()?;
    Ok(row.map(|row| {
        if row.state != COMPLETED {
            return Stored::InFlight;
        }
        // As `begin` replays it.
        Stored::Completed {
            status: row
                .response_status
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(500),
            body: row.response_body.unwrap_or_default(),
        }
    }))
}
