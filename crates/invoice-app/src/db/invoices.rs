//! Queries on `invoices`, including the claim that makes each invoice paid by one worker.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::AnyConnection;
use super::schema::invoices::{self, dsl};
use crate::domain::{Invoice, InvoiceStatus};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = invoices)]
pub struct InvoiceRow {
    pub id: String,
    pub customer_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub description: String,
    pub status: String,
    pub failure_reason: Option<String>,
    pub charge_id: Option<String>,
    pub claimed_by: Option<String>,
    pub lease_until: Option<NaiveDateTime>,
    pub last_run_id: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub paid_at: Option<NaiveDateTime>,
    pub attention: Option<String>,
    /// Who created it through the API (`jwt:<sub>`, `key:<client>`, `dev`).
    pub created_by: Option<String>,
}

impl TryFrom<InvoiceRow> for Invoice {
    type Error = String;
    fn try_from(row: InvoiceRow) -> Result<Self, String> {
        let currency = row
            .currency
            .parse()
            .map_err(|e| format!("invoice {}: {e}", row.id))?;
        Ok(Invoice {
            customer_id: api_contract::CustomerId::parse(row.customer_id)
                .map_err(|e| e.to_string())?,
            amount: api_contract::Money::new(row.amount_minor, currency)
                .map_err(|e| e.to_string())?,
            description: row.description,
            status: row.status.parse::<InvoiceStatus>()?,
            failure_reason: row.failure_reason,
            charge_id: row.charge_id,
            attention: row.attention,
            created_at: row.created_at.and_utc(),
            paid_at: row.paid_at.map(|t| t.and_utc()),
            created_by: row.created_by,
            id: row.id,
        })
    }
}

pub fn insert(conn: &mut AnyConnection, rows: &[InvoiceRow]) -> QueryResult<usize> {
    conn.transaction(|c| {
        let mut n = 0;
        for row in rows {
            n += diesel::insert_into(invoices::table)
                .values(row)
                .execute(c)?;
        }
        Ok(n)
    })
}

pub fn find(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<InvoiceRow>> {
    invoices::table
        .find(id)
        .select(InvoiceRow::as_select())
        .first(conn)
        .optional()
}

/// A page in id order (ids are time-ordered UUIDv7), after `cursor` when given.
pub fn list(
    conn: &mut AnyConnection,
    status: Option<&str>,
    cursor: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<InvoiceRow>> {
    let mut query = invoices::table.select(InvoiceRow::as_select()).into_boxed();
    if let Some(status) = status {
        query = query.filter(dsl::status.eq(status.to_owned()));
    }
    if let Some(cursor) = cursor {
        query = query.filter(dsl::id.gt(cursor.to_owned()));
    }
    query.order(dsl::id).limit(limit).load(conn)
}

pub fn count(conn: &mut AnyConnection) -> QueryResult<i64> {
    invoices::table.count().get_result(conn)
}

pub fn count_by_status(conn: &mut AnyConnection) -> QueryResult<Vec<(String, i64)>> {
    invoices::table
        .group_by(dsl::status)
        .select((dsl::status, diesel::dsl::count_star()))
        .load(conn)
}

/// Pending invoices marked for a person to look at.
pub fn count_attention(conn: &mut AnyConnection) -> QueryResult<i64> {
    invoices::table
        .filter(dsl::status.eq("pending"))
        .filter(dsl::attention.is_not_null())
        .count()
        .get_result(conn)
}

/// Invoices in `processing` whose lease ran out before `now` and whose run is not alive
/// (no heartbeat since `alive_since`): nobody is paying them. A live run's queued claims
/// lapse while they wait (the lease is renewed as each call starts) and are not counted.
pub fn count_lease_expired(
    conn: &mut AnyConnection,
    now: NaiveDateTime,
    alive_since: NaiveDateTime,
) -> QueryResult<i64> {
    use super::schema::pay_runs;
    let live_runs = pay_runs::table
        .select(pay_runs::id.nullable())
        .filter(pay_runs::status.eq(crate::domain::RunStatus::Running.as_str()))
        .filter(pay_runs::heartbeat_at.ge(alive_since));
    invoices::table
        .filter(dsl::status.eq("processing"))
        .filter(dsl::lease_until.lt(now))
        .filter(
            dsl::last_run_id
                .is_null()
                .or(diesel::dsl::not(dsl::last_run_id.eq_any(live_runs))),
        )
        .count()
        .get_result(conn)
}

/// Where a run's claim looks among the pending invoices.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scan<'a> {
    /// After this id: the invoices up to it this run has taken already.
    pub after: Option<&'a str>,
    /// Once the run has gone past the end: behind its cursor too, skipping the invoices it
    /// has called.
    pub again: bool,
}

/// What a claim took, and where the next claim of the same run continues among the
/// pending invoices.
pub struct Claimed {
    pub rows: Vec<InvoiceRow>,
    pub cursor: Option<String>,
}

/// Claims up to `limit` invoices for `worker` in one transaction: pending ones this run has
/// not tried yet, and processing ones whose holder's lease expired (other runs' only). On PostgreSQL rows
/// locked by another replica's claim are skipped, so concurrent runs never share one.
pub fn claim(
    conn: &mut AnyConnection,
    worker: &str,
    run_id: &str,
    scan: Scan<'_>,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
    limit: i64,
) -> QueryResult<Claimed> {
    let Scan { after, again } = scan;
    // Two queries, each a range of the (status, id) index: one `OR` across both statuses
    // made PostgreSQL scan and sort the table for every batch.
    macro_rules! expired {
        ($limit:expr) => {
            invoices::table
                .select(dsl::id)
                .filter(dsl::status.eq("processing"))
                .filter(dsl::lease_until.lt(now))
                // A run never re-takes its own claims: one waiting in its queue is still
                // live, and its lease is renewed when its call starts.
                .filter(dsl::last_run_id.is_null().or(dsl::last_run_id.ne(run_id)))
                .order(dsl::id)
                .limit($limit)
        };
    }
    // From `after` on: the index entries behind it are the invoices this run already took,
    // dead to the index until vacuum comes, and rescanning them made each batch slower.
    macro_rules! pending {
        ($limit:expr) => {
            invoices::table
                .select(dsl::id)
                .filter(dsl::status.eq("pending"))
                .filter(dsl::id.gt(after.unwrap_or_default()))
                .filter(dsl::last_run_id.is_null().or(dsl::last_run_id.ne(run_id)))
                .order(dsl::id)
                .limit($limit)
        };
    }
    // Once the run has gone past the end (`again`): pending invoices behind the cursor too,
    // which other runs handed back there, but none this run has called already, so two runs
    // handing an invoice back and forth while the provider is down each try it once.
    macro_rules! pending_again {
        ($limit:expr) => {{
            use super::schema::payment_attempts as attempts;
            let tried = attempts::table
                .select(attempts::invoice_id)
                .filter(attempts::pay_run_id.eq(run_id));
            pending!($limit).filter(diesel::dsl::not(dsl::id.eq_any(tried)))
        }};
    }
    macro_rules! take {
        ($c:expr, $ids:expr) => {{
            diesel::update(invoices::table.filter(dsl::id.eq_any(&$ids)))
                .set((
                    dsl::status.eq("processing"),
                    dsl::claimed_by.eq(worker),
                    dsl::lease_until.eq(lease_until),
                    dsl::last_run_id.eq(run_id),
                    dsl::updated_at.eq(now),
                ))
                .execute($c)?;
            invoices::table
                .filter(dsl::id.eq_any(&$ids))
                .order(dsl::id)
                .select(InvoiceRow::as_select())
                .load($c)
        }};
    }
    match conn {
        AnyConnection::Postgresql(pg) => pg.transaction(|c| {
            let mut ids: Vec<String> = expired!(limit).for_update().skip_locked().load(c)?;
            let rest = limit - ids.len() as i64;
            let pending: Vec<String> = if again {
                pending_again!(rest).for_update().skip_locked().load(c)?
            } else {
                pending!(rest).for_update().skip_locked().load(c)?
            };
            let cursor = pending.last().cloned();
            ids.extend(pending);
            Ok(Claimed {
                rows: take!(c, ids)?,
                cursor,
            })
        }),
        // One writer at a time: the immediate transaction takes the write lock up front.
        AnyConnection::Sqlite(sqlite) => sqlite.immediate_transaction(|c| {
            let mut ids: Vec<String> = expired!(limit).load(c)?;
            let rest = limit - ids.len() as i64;
            let pending: Vec<String> = if again {
                pending_again!(rest).load(c)?
            } else {
                pending!(rest).load(c)?
            };
            let cursor = pending.last().cloned();
            ids.extend(pending);
            Ok(Claimed {
                rows: take!(c, ids)?,
                cursor,
            })
        }),
    }
}

/// Records the payment. Applies whoever holds the claim now: the provider's answer is the
/// truth, and a replay of the same key gives every holder the same charge.
pub fn mark_paid(
    conn: &mut AnyConnection,
    id: &str,
    charge_id: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(invoices::table.find(id).filter(dsl::status.ne("paid")))
        .set((
            dsl::status.eq("paid"),
            dsl::charge_id.eq(charge_id),
            dsl::failure_reason.eq(None::<String>),
            dsl::attention.eq(None::<String>),
            dsl::claimed_by.eq(None::<String>),
            dsl::lease_until.eq(None::<NaiveDateTime>),
            dsl::paid_at.eq(now),
            dsl::updated_at.eq(now),
        ))
        .execute(conn)
}

/// [`mark_paid`] for many invoices, given as (invoice id, charge id); returns the ids it
/// changed. One statement on PostgreSQL, one update each on SQLite.
pub fn mark_all_paid(
    conn: &mut AnyConnection,
    all: &[(&str, &str)],
    now: NaiveDateTime,
) -> QueryResult<Vec<String>> {
    use diesel::sql_types::{Array, Text, Timestamp};
    #[derive(QueryableByName)]
    struct Changed {
        #[diesel(sql_type = Text)]
        id: String,
    }
    match conn {
        AnyConnection::Postgresql(pg) => {
            if all.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<&str> = all.iter().map(|(id, _)| *id).collect();
            let charges: Vec<&str> = all.iter().map(|(_, charge)| *charge).collect();
            let changed: Vec<Changed> = diesel::sql_query(
                "UPDATE invoices AS i \
                 SET status = 'paid', charge_id = v.charge_id, failure_reason = NULL, attention = NULL, \
                     claimed_by = NULL, lease_until = NULL, paid_at = $3, updated_at = $3 \
                 FROM unnest($1::text[], $2::text[]) AS v (id, charge_id) \
                 WHERE i.id = v.id AND i.status <> 'paid' \
                 RETURNING i.id",
            )
            .bind::<Array<Text>, _>(ids)
            .bind::<Array<Text>, _>(charges)
            .bind::<Timestamp, _>(now)
            .load(pg)?;
            Ok(changed.into_iter().map(|c| c.id).collect())
        }
        AnyConnection::Sqlite(_) => {
            let mut changed = Vec::with_capacity(all.len());
            for (id, charge_id) in all {
                if mark_paid(conn, id, charge_id, now)? == 1 {
                    changed.push((*id).to_owned());
                }
            }
            Ok(changed)
        }
    }
}

/// Marks a permanent failure, if `worker`'s run `run_id` still holds the claim.
pub fn mark_failed(
    conn: &mut AnyConnection,
    id: &str,
    worker: &str,
    run_id: &str,
    reason: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(held_by(id, worker, run_id))
        .set((
            dsl::status.eq("failed"),
            dsl::failure_reason.eq(reason),
            dsl::attention.eq(None::<String>),
            dsl::claimed_by.eq(None::<String>),
            dsl::lease_until.eq(None::<NaiveDateTime>),
            dsl::updated_at.eq(now),
        ))
        .execute(conn)
}

/// Hands an invoice back to `pending` for a later run, if `worker`'s run `run_id` still
/// holds the claim (another run of the same process may have taken it over).
pub fn release(
    conn: &mut AnyConnection,
    id: &str,
    worker: &str,
    run_id: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(held_by(id, worker, run_id))
        .set(released(now))
        .execute(conn)
}

/// Renews `worker`'s claim for the call about to start, if `run_id` of that worker still
/// holds it; false means another worker took it over and this run must not call.
pub fn renew(
    conn: &mut AnyConnection,
    id: &str,
    worker: &str,
    run_id: &str,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
) -> QueryResult<bool> {
    diesel::update(held_by(id, worker, run_id))
        .set((dsl::lease_until.eq(lease_until), dsl::updated_at.eq(now)))
        .execute(conn)
        .map(|n| n == 1)
}

/// [`release`], recording the reason a person should look at the invoice.
pub fn release_for_attention(
    conn: &mut AnyConnection,
    id: &str,
    worker: &str,
    run_id: &str,
    reason: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(held_by(id, worker, run_id))
        .set((released(now), dsl::attention.eq(reason)))
        .execute(conn)
}

/// When the first claim held by a run other than `run_id` lapses, or `None` when no other
/// run holds anything. A live holder settles its claims before then; a dead one (killed
/// moments ago, its heartbeat still fresh) never will, and a run that completed while
/// either held invoices would leave some of its period untried.
pub fn next_lapse_of_others(
    conn: &mut AnyConnection,
    run_id: &str,
) -> QueryResult<Option<NaiveDateTime>> {
    invoices::table
        .filter(dsl::status.eq("processing"))
        .filter(dsl::last_run_id.is_null().or(dsl::last_run_id.ne(run_id)))
        .select(diesel::dsl::min(dsl::lease_until))
        .get_result(conn)
}

/// Hands back the claims `worker`'s run `run_id` still holds (the run failed).
pub fn release_run(
    conn: &mut AnyConnection,
    worker: &str,
    run_id: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        invoices::table
            .filter(dsl::status.eq("processing"))
            .filter(dsl::claimed_by.eq(worker))
            .filter(dsl::last_run_id.eq(run_id)),
    )
    .set(released(now))
    .execute(conn)
}

/// Hands back every claim of `worker` (graceful shutdown).
pub fn release_all(
    conn: &mut AnyConnection,
    worker: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        invoices::table
            .filter(dsl::status.eq("processing"))
            .filter(dsl::claimed_by.eq(worker)),
    )
    .set(released(now))
    .execute(conn)
}

#[diesel::dsl::auto_type]
fn held_by<'a>(id: &'a str, worker: &'a str, run_id: &'a str) -> _ {
    invoices::table
        .filter(dsl::id.eq(id))
        .filter(dsl::status.eq("processing"))
        .filter(dsl::claimed_by.eq(worker))
        .filter(dsl::last_run_id.eq(run_id))
}

#[allow(clippy::type_complexity)]
fn released(
    now: NaiveDateTime,
) -> (
    diesel::dsl::Eq<dsl::status, &'static str>,
    diesel::dsl::Eq<dsl::claimed_by, Option<String>>,
    diesel::dsl::Eq<dsl::lease_until, Option<NaiveDateTime>>,
    diesel::dsl::Eq<dsl::updated_at, NaiveDateTime>,
) {
    (
        dsl::status.eq("pending"),
        dsl::claimed_by.eq(None::<String>),
        dsl::lease_until.eq(None::<NaiveDateTime>),
        dsl::updated_at.eq(now),
    )
}
