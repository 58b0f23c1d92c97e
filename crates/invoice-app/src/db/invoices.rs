//! Queries on `invoices`, including the claim that makes each invoice paid by one worker.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::AnyConnection;
use super::schema::invoices::{self, dsl};
use crate::domain::{
    Guard, HAND_BACK, Invoice, InvoiceStatus, RunId, RunStatus, Target, Transition, WorkerId, Write,
};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = invoices)]
pub struct InvoiceRow {
    pub id: String,
    pub customer_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub description: String,
    pub status: InvoiceStatus,
    pub failure_reason: Option<String>,
    pub charge_id: Option<String>,
    pub claimed_by: Option<WorkerId>,
    pub lease_until: Option<NaiveDateTime>,
    pub last_run_id: Option<RunId>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub paid_at: Option<NaiveDateTime>,
    pub attention: Option<String>,
    /// Who created it through the API (`jwt:<sub>`, `key:<client>`, `dev`).
    pub created_by: Option<String>,
    /// Soft declines so far.
    pub attempt_count: i32,
    /// The first soft decline, which the dunning schedule counts from.
    pub past_due_since: Option<NaiveDateTime>,
    /// When a past-due invoice is due for its next attempt.
    pub next_attempt_at: Option<NaiveDateTime>,
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
            status: row.status,
            failure_reason: row.failure_reason,
            charge_id: row.charge_id,
            attention: row.attention,
            created_at: row.created_at.and_utc(),
            paid_at: row.paid_at.map(|t| t.and_utc()),
            created_by: row.created_by,
            attempt_count: row.attempt_count,
            next_attempt_at: row.next_attempt_at.map(|t| t.and_utc()),
            id: api_contract::InvoiceId::parse(row.id).map_err(|e| e.to_string())?,
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
    status: Option<InvoiceStatus>,
    cursor: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<InvoiceRow>> {
    let mut query = invoices::table.select(InvoiceRow::as_select()).into_boxed();
    if let Some(status) = status {
        query = query.filter(dsl::status.eq(status));
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

/// Past-due invoices whose next attempt is due at `now`, and the earliest of their due
/// times: retries no run has made yet. Those marked for attention wait for a person, not a
/// run (the attention gauge counts them).
pub fn retries_due(
    conn: &mut AnyConnection,
    now: NaiveDateTime,
) -> QueryResult<(i64, Option<NaiveDateTime>)> {
    invoices::table
        .filter(dsl::status.eq(InvoiceStatus::PastDue))
        .filter(dsl::attention.is_null())
        .filter(dsl::next_attempt_at.le(now))
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::min(dsl::next_attempt_at),
        ))
        .get_result(conn)
}

/// Invoices that went past due (their first soft decline) since `since`, by where they
/// stand now: still in dunning (past due, processing), paid on a retry, failed or
/// uncollectible.
pub fn count_dunning_by_status(
    conn: &mut AnyConnection,
    since: NaiveDateTime,
) -> QueryResult<Vec<(String, i64)>> {
    invoices::table
        .filter(dsl::past_due_since.ge(since))
        .group_by(dsl::status)
        .select((dsl::status, diesel::dsl::count_star()))
        .load(conn)
}

/// Waiting invoices (pending or past due) marked for a person to look at.
pub fn count_attention(conn: &mut AnyConnection) -> QueryResult<i64> {
    invoices::table
        .filter(dsl::status.eq_any([InvoiceStatus::Pending, InvoiceStatus::PastDue]))
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
        .filter(pay_runs::status.eq(RunStatus::Running))
        .filter(pay_runs::heartbeat_at.ge(alive_since));
    invoices::table
        .filter(dsl::status.eq(InvoiceStatus::Processing))
        .filter(dsl::lease_until.lt(now))
        .filter(
            dsl::last_run_id
                .is_null()
                .or(diesel::dsl::not(dsl::last_run_id.eq_any(live_runs))),
        )
        .count()
        .get_result(conn)
}

/// Who holds a claim: a worker (process) and its pay run. A claim is the pair's, never
/// the worker's alone, as one process runs several runs over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder<'a> {
    pub worker: &'a WorkerId,
    pub run: &'a RunId,
}

/// Where a run's claim looks among the pending invoices.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scan<'a> {
    /// After this id: the invoices up to it this run has taken already.
    pub after: Option<&'a str>,
    /// Once the run has gone past the end: behind its cursor too, skipping the invoices it
    /// has called.
    pub again: bool,
    /// Only past-due invoices that are due, and lapsed claims: no pending invoice (a
    /// dunning run retries; the monthly run bills).
    pub only_due: bool,
}

/// What a claim took, and where the next claim of the same run continues among the
/// pending invoices.
pub struct Claimed {
    pub rows: Vec<InvoiceRow>,
    pub cursor: Option<String>,
}

/// Claims the invoices `$ids` for the holder's `$worker` and `$run` until `$lease_until`,
/// inside the caller's transaction on one backend's connection `$c`, and reads them back
/// in id order: the write every claim (a run's, a reconciliation's) ends with.
macro_rules! take {
    ($c:expr, $ids:expr, $worker:expr, $run:expr, $now:expr, $lease_until:expr) => {{
        diesel::update(invoices::table.filter(dsl::id.eq_any(&$ids)))
            .set((
                dsl::status.eq(InvoiceStatus::Processing),
                dsl::claimed_by.eq($worker),
                dsl::lease_until.eq($lease_until),
                dsl::last_run_id.eq($run),
                dsl::updated_at.eq($now),
            ))
            .execute($c)?;
        invoices::table
            .filter(dsl::id.eq_any(&$ids))
            .order(dsl::id)
            .select(InvoiceRow::as_select())
            .load($c)
    }};
}

/// Claims up to `limit` invoices for `holder` in one transaction: processing ones whose
/// holder's lease expired (other runs' only), past-due ones that are due, and pending ones,
/// none its run has tried yet. On PostgreSQL rows locked by another replica's claim are
/// skipped, so concurrent runs never share one.
pub fn claim(
    conn: &mut AnyConnection,
    holder: Holder<'_>,
    scan: Scan<'_>,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
    limit: i64,
) -> QueryResult<Claimed> {
    let Scan {
        after,
        again,
        only_due,
    } = scan;
    // A dunning run takes no pending invoice.
    let pending_limit = |rest: i64| if only_due { 0 } else { rest };
    let Holder {
        worker,
        run: run_id,
    } = holder;
    // Two queries, each a range of the (status, id) index: one `OR` across both statuses
    // made PostgreSQL scan and sort the table for every batch.
    macro_rules! expired {
        ($limit:expr) => {
            invoices::table
                .select(dsl::id)
                .filter(dsl::status.eq(InvoiceStatus::Processing))
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
    // None marked for attention: the same call would get the same answer (a reused key, a
    // refused credential) until a person resolves it.
    macro_rules! pending {
        ($limit:expr) => {
            invoices::table
                .select(dsl::id)
                .filter(dsl::status.eq(InvoiceStatus::Pending))
                .filter(dsl::attention.is_null())
                .filter(dsl::id.gt(after.unwrap_or_default()))
                .filter(dsl::last_run_id.is_null().or(dsl::last_run_id.ne(run_id)))
                .order(dsl::id)
                .limit($limit)
        };
    }
    // Once the run has gone past the end (`again`): pending invoices behind the cursor too,
    // which other runs handed back there, but none this run has called already, so two runs
    // handing an invoice back and forth while the provider is down each try it once.
    macro_rules! tried {
        () => {{
            use super::schema::payment_attempts as attempts;
            attempts::table
                .select(attempts::invoice_id)
                .filter(attempts::pay_run_id.eq(run_id))
        }};
    }
    macro_rules! pending_again {
        ($limit:expr) => {
            pending!($limit).filter(diesel::dsl::not(dsl::id.eq_any(tried!())))
        };
    }
    // Past-due invoices whose next attempt is due, none this run has called: one handed
    // back (the provider down) stays due, and is the next run's. None marked for attention,
    // as for pending ones.
    macro_rules! due {
        ($limit:expr) => {
            invoices::table
                .select(dsl::id)
                .filter(dsl::status.eq(InvoiceStatus::PastDue))
                .filter(dsl::attention.is_null())
                .filter(dsl::next_attempt_at.le(now))
                .filter(diesel::dsl::not(dsl::id.eq_any(tried!())))
                .order(dsl::id)
                .limit($limit)
        };
    }
    match conn {
        AnyConnection::Postgresql(pg) => pg.transaction(|c| {
            let mut ids: Vec<String> = expired!(limit).for_update().skip_locked().load(c)?;
            let due: Vec<String> = due!(limit - ids.len() as i64)
                .for_update()
                .skip_locked()
                .load(c)?;
            ids.extend(due);
            let rest = pending_limit(limit - ids.len() as i64);
            let pending: Vec<String> = if again {
                pending_again!(rest).for_update().skip_locked().load(c)?
            } else {
                pending!(rest).for_update().skip_locked().load(c)?
            };
            let cursor = pending.last().cloned();
            ids.extend(pending);
            Ok(Claimed {
                rows: take!(c, ids, worker, run_id, now, lease_until)?,
                cursor,
            })
        }),
        // One writer at a time: the immediate transaction takes the write lock up front.
        AnyConnection::Sqlite(sqlite) => sqlite.immediate_transaction(|c| {
            let mut ids: Vec<String> = expired!(limit).load(c)?;
            ids.extend(due!(limit - ids.len() as i64).load::<String>(c)?);
            let rest = pending_limit(limit - ids.len() as i64);
            let pending: Vec<String> = if again {
                pending_again!(rest).load(c)?
            } else {
                pending!(rest).load(c)?
            };
            let cursor = pending.last().cloned();
            ids.extend(pending);
            Ok(Claimed {
                rows: take!(c, ids, worker, run_id, now, lease_until)?,
                cursor,
            })
        }),
    }
}

/// Claims invoice `id` alone for `holder` (an operator's retry), if it waits for a run
/// (pending or past due, due or not) and needs no attention: the row as claimed, or `None`
/// where it does not. Call it inside the caller's transaction, which records the run and
/// the action with it. A run's claims skip the row while this one holds it (PostgreSQL
/// locks it; SQLite has one writer).
pub fn claim_one(
    conn: &mut AnyConnection,
    id: &str,
    holder: Holder<'_>,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
) -> QueryResult<Option<InvoiceRow>> {
    let claimed = diesel::update(
        invoices::table
            .filter(dsl::id.eq(id))
            .filter(dsl::status.eq_any(InvoiceStatus::WAITING))
            .filter(dsl::attention.is_null()),
    )
    .set((
        dsl::status.eq(InvoiceStatus::Processing),
        dsl::claimed_by.eq(holder.worker),
        dsl::lease_until.eq(lease_until),
        dsl::last_run_id.eq(holder.run),
        dsl::updated_at.eq(now),
    ))
    .execute(conn)?;
    if claimed == 0 {
        return Ok(None);
    }
    find(conn, id)
}

/// Voids invoice `id` if it waits for a run (pending or past due): never charged again, its
/// attention and next attempt cleared. Returns the rows it changed (0 or 1).
pub fn void(conn: &mut AnyConnection, id: &str, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(
        invoices::table
            .filter(dsl::id.eq(id))
            .filter(dsl::status.eq_any(InvoiceStatus::WAITING)),
    )
    .set((
        dsl::status.eq(InvoiceStatus::Void),
        dsl::attention.eq(None::<String>),
        dsl::next_attempt_at.eq(None::<NaiveDateTime>),
        dsl::updated_at.eq(now),
    ))
    .execute(conn)
}

/// Clears the attention of invoice `id` if it waits for a run and has one: it is the next
/// run's again (a past-due one keeps its next attempt, due already). Returns the rows it
/// changed (0 or 1).
pub fn dismiss(conn: &mut AnyConnection, id: &str, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(
        invoices::table
            .filter(dsl::id.eq(id))
            .filter(dsl::status.eq_any(InvoiceStatus::WAITING))
            .filter(dsl::attention.is_not_null()),
    )
    .set((dsl::attention.eq(None::<String>), dsl::updated_at.eq(now)))
    .execute(conn)
}

/// Where a reconciliation's claim looks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lookups<'a> {
    /// After this id: the candidates up to it this run has taken already.
    pub after: Option<&'a str>,
    /// This invoice only, if it waits, whatever its last attempt (an operator asked).
    pub only: Option<&'a str>,
}

/// Claims up to `limit` waiting invoices (pending or past due, never one a run holds) that
/// may have been charged, for `holder` to look up at the provider, in id order: those whose
/// last attempt never learnt its answer (`started`, `interrupted`, `unknown`, or a lookup
/// that got none), and those marked for attention. The claim is a pay run's (`processing`,
/// with a lease), so no run charges an invoice while it is looked up, and on PostgreSQL
/// rows locked by another replica's claim are skipped.
pub fn claim_lookups(
    conn: &mut AnyConnection,
    holder: Holder<'_>,
    scan: Lookups<'_>,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
    limit: i64,
) -> QueryResult<Claimed> {
    use crate::domain::{AttemptKind, AttemptOutcome};
    use diesel::sql_types::{BigInt, Nullable, Text};
    #[derive(QueryableByName)]
    struct Candidate {
        #[diesel(sql_type = Text)]
        id: String,
    }
    // The last attempt by the database's time of its start, then its id; the texts are the
    // enums' own, so no input reaches the SQL but the binds.
    let sql = format!(
        "SELECT i.id FROM invoices i \
         WHERE i.status IN ('{pending}', '{past_due}') AND i.id > $1 \
           AND ($2 IS NULL OR i.id = $2) \
           AND ($2 IS NOT NULL OR i.attention IS NOT NULL OR EXISTS ( \
             SELECT 1 FROM payment_attempts a \
             WHERE a.id = (SELECT b.id FROM payment_attempts b WHERE b.invoice_id = i.id \
                           ORDER BY b.started_at DESC, b.id DESC LIMIT 1) \
               AND (a.outcome IN ('{started}', '{interrupted}', '{unknown}') \
                    OR (a.kind = '{lookup}' AND a.outcome = '{retryable}')))) \
         ORDER BY i.id LIMIT $3",
        pending = InvoiceStatus::Pending.as_str(),
        past_due = InvoiceStatus::PastDue.as_str(),
        started = AttemptOutcome::Started.as_str(),
        interrupted = AttemptOutcome::Interrupted.as_str(),
        unknown = AttemptOutcome::Unknown.as_str(),
        lookup = AttemptKind::Lookup.as_str(),
        retryable = AttemptOutcome::Retryable.as_str(),
    );
    let after = scan.after.unwrap_or_default();
    let Holder {
        worker,
        run: run_id,
    } = holder;
    let claimed = |ids: Vec<Candidate>| -> Vec<String> { ids.into_iter().map(|c| c.id).collect() };
    let rows: Vec<InvoiceRow> = match conn {
        AnyConnection::Postgresql(pg) => pg.transaction(|c| {
            let ids = claimed(
                diesel::sql_query(format!(
                    "{} FOR UPDATE OF i SKIP LOCKED",
                    sql.replace("$2 IS", "$2::text IS")
                ))
                .bind::<Text, _>(after)
                .bind::<Nullable<Text>, _>(scan.only)
                .bind::<BigInt, _>(limit)
                .load(c)?,
            );
            take!(c, ids, worker, run_id, now, lease_until)
        })?,
        // One writer at a time: the immediate transaction takes the write lock up front.
        AnyConnection::Sqlite(sqlite) => sqlite.immediate_transaction(|c| {
            let ids = claimed(
                diesel::sql_query(sql.replace('$', "?"))
                    .bind::<Text, _>(after)
                    .bind::<Nullable<Text>, _>(scan.only)
                    .bind::<BigInt, _>(limit)
                    .load(c)?,
            );
            take!(c, ids, worker, run_id, now, lease_until)
        })?,
    };
    let cursor = rows.last().map(|row| row.id.clone());
    Ok(Claimed { rows, cursor })
}

/// Writes the transition `t` to invoice `id` where its guard admits it: with
/// [`Guard::Claim`] only while `holder` still holds the claim (another run may have taken
/// it over); with [`Guard::NotYet`] whoever holds it. Returns the rows it changed (0 or 1).
pub fn settle(
    conn: &mut AnyConnection,
    id: &str,
    holder: Holder<'_>,
    t: &Transition<'_>,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    match t.guard {
        Guard::Claim => diesel::update(held_by(id, holder))
            .set(changes(t, now))
            .execute(conn),
        Guard::NotYet => not_yet(conn, id, t, now),
    }
}

/// [`settle`] for a [`Guard::NotYet`] transition, which needs no holder.
fn not_yet(
    conn: &mut AnyConnection,
    id: &str,
    t: &Transition<'_>,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    // Only a transition into one status has this guard (a payment).
    let to = t.to.resolve(0);
    diesel::update(invoices::table.find(id).filter(dsl::status.ne(to)))
        .set(changes(t, now))
        .execute(conn)
}

/// Records many payments, given as (invoice id, charge id), as [`Transition::paid`] does;
/// returns the ids it changed. One statement on PostgreSQL, one update each on SQLite.
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
            // `Transition::paid` written as one statement (a round trip per invoice was
            // most of a settlement's cost); `bulk_paid_is_the_paid_transition` pins the
            // transition it was written for.
            let changed: Vec<Changed> = diesel::sql_query(
                "UPDATE invoices AS i \
                 SET status = $4, charge_id = v.charge_id, failure_reason = NULL, attention = NULL, \
                     next_attempt_at = NULL, claimed_by = NULL, lease_until = NULL, \
                     paid_at = $3, updated_at = $3 \
                 FROM unnest($1::text[], $2::text[]) AS v (id, charge_id) \
                 WHERE i.id = v.id AND i.status <> $4 \
                 RETURNING i.id",
            )
            .bind::<Array<Text>, _>(ids)
            .bind::<Array<Text>, _>(charges)
            .bind::<Timestamp, _>(now)
            .bind::<Text, _>(Transition::paid("").to.resolve(0))
            .load(pg)?;
            Ok(changed.into_iter().map(|c| c.id).collect())
        }
        AnyConnection::Sqlite(_) => {
            let mut changed = Vec::with_capacity(all.len());
            for (id, charge_id) in all {
                if not_yet(conn, id, &Transition::paid(charge_id), now)? == 1 {
                    changed.push((*id).to_owned());
                }
            }
            Ok(changed)
        }
    }
}

/// Hands an invoice back to `pending` for a later run, if `holder` still holds the claim
/// (another run of the same process may have taken it over).
pub fn release(
    conn: &mut AnyConnection,
    id: &str,
    holder: Holder<'_>,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    settle(conn, id, holder, &HAND_BACK, now)
}

/// Renews `holder`'s claim for the call about to start, if it still holds it; false means
/// another worker took it over and this run must not call.
pub fn renew(
    conn: &mut AnyConnection,
    id: &str,
    holder: Holder<'_>,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
) -> QueryResult<bool> {
    diesel::update(held_by(id, holder))
        .set((dsl::lease_until.eq(lease_until), dsl::updated_at.eq(now)))
        .execute(conn)
        .map(|n| n == 1)
}

/// The row as [`settle`] leaves it after writing `t`, without reading it back.
pub fn settled(mut row: InvoiceRow, t: &Transition<'_>, now: NaiveDateTime) -> InvoiceRow {
    fn write<T>(column: &mut Option<T>, w: Write<T>) {
        match w {
            Write::Keep => {}
            Write::Clear => *column = None,
            Write::Set(value) => *column = Some(value),
        }
    }
    row.status = t.to.resolve(row.attempt_count);
    row.claimed_by = None;
    row.lease_until = None;
    row.updated_at = now;
    if let Some(charge_id) = t.charge {
        row.charge_id = Some(charge_id.to_owned());
        row.paid_at = Some(now);
    }
    write(&mut row.failure_reason, t.failure_reason.map(str::to_owned));
    write(&mut row.attention, t.attention.map(str::to_owned));
    write(&mut row.past_due_since, t.past_due_since);
    write(&mut row.next_attempt_at, t.next_attempt_at);
    if let Some(count) = t.attempt_count {
        row.attempt_count = count;
    }
    row
}

/// When the first claim held by a run other than `run_id` lapses, or `None` when no other
/// run holds anything. A live holder settles its claims before then; a dead one (killed
/// moments ago, its heartbeat still fresh) never will, and a run that completed while
/// either held invoices would leave some of its period untried.
pub fn next_lapse_of_others(
    conn: &mut AnyConnection,
    run_id: &RunId,
) -> QueryResult<Option<NaiveDateTime>> {
    invoices::table
        .filter(dsl::status.eq(InvoiceStatus::Processing))
        .filter(dsl::last_run_id.is_null().or(dsl::last_run_id.ne(run_id)))
        .select(diesel::dsl::min(dsl::lease_until))
        .get_result(conn)
}

/// Hands back the claims `holder` still holds (its run failed).
pub fn release_run(
    conn: &mut AnyConnection,
    holder: Holder<'_>,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        invoices::table
            .filter(dsl::status.eq(InvoiceStatus::Processing))
            .filter(dsl::claimed_by.eq(holder.worker))
            .filter(dsl::last_run_id.eq(holder.run)),
    )
    .set(changes(&HAND_BACK, now))
    .execute(conn)
}

/// Hands back every claim of `worker` (graceful shutdown).
pub fn release_all(
    conn: &mut AnyConnection,
    worker: &WorkerId,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        invoices::table
            .filter(dsl::status.eq(InvoiceStatus::Processing))
            .filter(dsl::claimed_by.eq(worker)),
    )
    .set(changes(&HAND_BACK, now))
    .execute(conn)
}

#[diesel::dsl::auto_type]
fn held_by<'a>(id: &'a str, holder: Holder<'a>) -> _ {
    let processing: InvoiceStatus = InvoiceStatus::Processing;
    let worker: &'a WorkerId = holder.worker;
    let run_id: &'a RunId = holder.run;
    invoices::table
        .filter(dsl::id.eq(id))
        .filter(dsl::status.eq(processing))
        .filter(dsl::claimed_by.eq(worker))
        .filter(dsl::last_run_id.eq(run_id))
}

/// The columns a transition writes (see [`settled`] for the same in Rust).
type Changes<'a> = (
    Option<diesel::dsl::Eq<dsl::status, InvoiceStatus>>,
    Option<diesel::dsl::Eq<dsl::status, diesel::expression::SqlLiteral<diesel::sql_types::Text>>>,
    diesel::dsl::Eq<dsl::claimed_by, Option<WorkerId>>,
    diesel::dsl::Eq<dsl::lease_until, Option<NaiveDateTime>>,
    diesel::dsl::Eq<dsl::updated_at, NaiveDateTime>,
    Option<(
        diesel::dsl::Eq<dsl::charge_id, &'a str>,
        diesel::dsl::Eq<dsl::paid_at, NaiveDateTime>,
    )>,
    Option<diesel::dsl::Eq<dsl::failure_reason, Option<&'a str>>>,
    Option<diesel::dsl::Eq<dsl::attention, Option<&'a str>>>,
    Option<diesel::dsl::Eq<dsl::attempt_count, i32>>,
    Option<diesel::dsl::Eq<dsl::past_due_since, Option<NaiveDateTime>>>,
    Option<diesel::dsl::Eq<dsl::next_attempt_at, Option<NaiveDateTime>>>,
);

fn changes<'a>(t: &Transition<'a>, now: NaiveDateTime) -> Changes<'a> {
    // `None` leaves a column out of the `SET` list.
    fn write<T>(w: Write<T>) -> Option<Option<T>> {
        match w {
            Write::Keep => None,
            Write::Clear => Some(None),
            Write::Set(value) => Some(Some(value)),
        }
    }
    let (status, waiting) = match t.to {
        Target::Status(status) => (Some(dsl::status.eq(status)), None),
        // Where the row waits, by its own count (as `InvoiceStatus::waiting` says).
        Target::Waiting => (
            None,
            Some(dsl::status.eq(diesel::dsl::sql(&format!(
                "CASE WHEN attempt_count > 0 THEN '{}' ELSE '{}' END",
                InvoiceStatus::waiting(1),
                InvoiceStatus::waiting(0)
            )))),
        ),
    };
    (
        status,
        waiting,
        dsl::claimed_by.eq(None),
        dsl::lease_until.eq(None),
        dsl::updated_at.eq(now),
        t.charge
            .map(|charge_id| (dsl::charge_id.eq(charge_id), dsl::paid_at.eq(now))),
        write(t.failure_reason).map(|v| dsl::failure_reason.eq(v)),
        write(t.attention).map(|v| dsl::attention.eq(v)),
        t.attempt_count.map(|n| dsl::attempt_count.eq(n)),
        write(t.past_due_since).map(|v| dsl::past_due_since.eq(v)),
        write(t.next_attempt_at).map(|v| dsl::next_attempt_at.eq(v)),
    )
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeDelta};
    use diesel::PgConnection;
    use strum::IntoEnumIterator;

    use super::*;
    use crate::db::{DbUrl, migrate, pool};
    use crate::domain::{RunResult, Settlement, transition};

    const WORKER: &str = "w-1";
    const RUN: &str = "run-1";

    /// Every settlement from every status, held by the settling run or by another: the
    /// SQL changed the row exactly where `transition` says it applies, and into what
    /// `settled` (the report's copy) says.
    fn the_sql_writes_what_the_transition_says(c: &mut AnyConnection) {
        let then = DateTime::from_timestamp(1_793_491_200, 0)
            .expect("a time")
            .naive_utc();
        let now = then + TimeDelta::minutes(1);
        let (worker, run) = (
            WorkerId::from(WORKER.to_owned()),
            RunId::from(RUN.to_owned()),
        );
        let settler = Holder {
            worker: &worker,
            run: &run,
        };
        let mut checked = 0;
        for from in InvoiceStatus::iter() {
            for s in Settlement::iter() {
                let s = match s {
                    Settlement::Paid { .. } => Settlement::Paid {
                        charge_id: "ch_new".into(),
                    },
                    Settlement::Failed { .. } => Settlement::Failed {
                        reason: "currency_mismatch".into(),
                        decline: Some(api_contract::DeclineClass::Hard),
                    },
                    Settlement::PastDue { .. } => Settlement::PastDue {
                        reason: "insufficient_funds".into(),
                        attempt_count: 3,
                        next_attempt_at: now + TimeDelta::days(2),
                        since: then,
                    },
                    Settlement::Uncollectible { .. } => Settlement::Uncollectible {
                        reason: "insufficient_funds".into(),
                        attempt_count: 4,
                    },
                    Settlement::RetryLater { .. } => Settlement::RetryLater {
                        reason: "budget spent".into(),
                    },
                    Settlement::Attention { .. } => Settlement::Attention {
                        reason: "key reused".into(),
                    },
                    Settlement::Released { .. } => Settlement::Released {
                        reason: "nothing under its key".into(),
                    },
                };
                // A first attempt, and a past-due invoice's retry (where a hand-back returns
                // it to past due, its next attempt kept).
                for (holder, declines) in [(WORKER, 0), ("w-2", 0), (WORKER, 2), ("w-2", 2)] {
                    let claimed = from == InvoiceStatus::Processing;
                    let row = InvoiceRow {
                        id: uuid::Uuid::now_v7().to_string(),
                        customer_id: "C001".into(),
                        amount_minor: 100,
                        currency: "EUR".into(),
                        description: String::new(),
                        status: from,
                        failure_reason: Some("earlier".into()),
                        charge_id: None,
                        claimed_by: claimed.then(|| WorkerId::from(holder.to_owned())),
                        lease_until: claimed.then_some(then),
                        last_run_id: Some(run.clone()),
                        created_at: then,
                        updated_at: then,
                        paid_at: None,
                        attention: Some("earlier".into()),
                        created_by: None,
                        attempt_count: declines,
                        past_due_since: (declines > 0).then_some(then),
                        next_attempt_at: (declines > 0).then_some(then),
                    };
                    insert(c, std::slice::from_ref(&row)).expect("inserted");
                    let t = s.transition();
                    let changed = match &s {
                        Settlement::Paid { charge_id } => {
                            mark_all_paid(c, &[(&row.id, charge_id)], now)
                                .expect("written")
                                .len()
                        }
                        _ => settle(c, &row.id, settler, &t, now).expect("written"),
                    };
                    let applies = transition(from, &s).is_some()
                        && (t.guard == Guard::NotYet || holder == WORKER);
                    let what = format!("{s:?} from {from} held by {holder}, {declines} declines");
                    assert_eq!(changed, usize::from(applies), "{what}");
                    let want = if applies {
                        settled(row.clone(), &t, now)
                    } else {
                        row.clone()
                    };
                    let stored = find(c, &row.id).expect("read").expect("there");
                    assert_eq!(stored, want, "{what}");
                    checked += 1;
                }
            }
        }
        assert_eq!(
            checked,
            InvoiceStatus::iter().count() * Settlement::iter().count() * 4
        );
    }

    /// Every operator action from every status, with and without attention: its guarded
    /// SQL (`void`, `claim_one`, `dismiss`) changes the row exactly where `Action::admits`
    /// says it applies, and only the columns the action is about.
    fn the_sql_guards_what_each_action_admits(c: &mut AnyConnection) {
        use crate::domain::Action;
        let then = DateTime::from_timestamp(1_793_491_200, 0)
            .expect("a time")
            .naive_utc();
        let now = then + TimeDelta::minutes(1);
        let (worker, run) = (
            WorkerId::from(WORKER.to_owned()),
            RunId::from(RUN.to_owned()),
        );
        let holder = Holder {
            worker: &worker,
            run: &run,
        };
        let mut checked = 0;
        for action in Action::iter() {
            for from in InvoiceStatus::iter() {
                for attention in [false, true] {
                    let claimed = from == InvoiceStatus::Processing;
                    let row = InvoiceRow {
                        id: uuid::Uuid::now_v7().to_string(),
                        customer_id: "C001".into(),
                        amount_minor: 100,
                        currency: "EUR".into(),
                        description: String::new(),
                        status: from,
                        failure_reason: Some("insufficient_funds".into()),
                        charge_id: None,
                        claimed_by: claimed.then(|| WorkerId::from("w-2".to_owned())),
                        lease_until: claimed.then_some(then),
                        last_run_id: None,
                        created_at: then,
                        updated_at: then,
                        paid_at: None,
                        attention: attention.then(|| "key reused".to_owned()),
                        created_by: None,
                        attempt_count: 1,
                        past_due_since: Some(then),
                        next_attempt_at: Some(then),
                    };
                    insert(c, std::slice::from_ref(&row)).expect("inserted");
                    let changed = match action {
                        Action::Void => void(c, &row.id, now).expect("written"),
                        Action::Dismiss => dismiss(c, &row.id, now).expect("written"),
                        Action::Retry => claim_one(c, &row.id, holder, now, now)
                            .expect("written")
                            .map_or(0, |_| 1),
                    };
                    let what = format!("{action} from {from}, attention {attention}");
                    let applies = action.admits(from, attention).is_ok();
                    assert_eq!(changed, usize::from(applies), "{what}");
                    let mut want = row.clone();
                    if applies {
                        want.updated_at = now;
                        match action {
                            Action::Void => {
                                want.status = InvoiceStatus::Void;
                                want.attention = None;
                                want.next_attempt_at = None;
                            }
                            Action::Dismiss => want.attention = None,
                            Action::Retry => {
                                want.status = InvoiceStatus::Processing;
                                want.claimed_by = Some(worker.clone());
                                want.lease_until = Some(now);
                                want.last_run_id = Some(run.clone());
                            }
                        }
                    }
                    let stored = find(c, &row.id).expect("read").expect("there");
                    assert_eq!(stored, want, "{what}");
                    checked += 1;
                }
            }
        }
        assert_eq!(
            checked,
            Action::iter().count() * InvoiceStatus::iter().count() * 2
        );
    }

    /// The hand-written bulk statement of `mark_all_paid` writes this transition: change
    /// both together.
    #[test]
    fn bulk_paid_is_the_paid_transition() {
        assert_eq!(
            Transition::paid("ch_1"),
            Transition {
                to: Target::Status(InvoiceStatus::Paid),
                guard: Guard::NotYet,
                charge: Some("ch_1"),
                failure_reason: Write::Clear,
                attention: Write::Clear,
                attempt_count: None,
                past_due_since: Write::Keep,
                next_attempt_at: Write::Clear,
                counts_as: RunResult::Paid,
            }
        );
    }

    #[test]
    fn settlements_on_sqlite() {
        let path = std::env::temp_dir().join(format!(
            "invoice_app_states_{}.db",
            uuid::Uuid::new_v4().simple()
        ));
        let db = pool(&DbUrl::Sqlite(path.to_string_lossy().into_owned()), 1);
        migrate(&mut db.get().expect("a connection")).expect("migrated");
        the_sql_writes_what_the_transition_says(&mut db.get().expect("a connection"));
        the_sql_guards_what_each_action_admits(&mut db.get().expect("a connection"));
        drop(db);
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }

    /// PostgreSQL writes paid invoices with its own bulk statement. Skipped (one line)
    /// without `TEST_DATABASE_URL`, a server URL as the integration tests take it.
    #[test]
    fn settlements_on_postgresql() {
        let Some(server) = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "TEST_DATABASE_URL must be set when CI=true"
            );
            eprintln!("PostgreSQL test SKIPPED: TEST_DATABASE_URL is not set");
            return;
        };
        // Good enough for the plain server URLs tests use: no database name, no query.
        let base = server.trim_end_matches('/');
        let name = format!("invoice_app_states_{}", uuid::Uuid::new_v4().simple());
        let admin = |sql: String| {
            let mut admin = PgConnection::establish(&format!("{base}/postgres?sslmode=disable"))
                .expect("PostgreSQL at TEST_DATABASE_URL is reachable");
            diesel::sql_query(sql).execute(&mut admin)
        };
        admin(format!("CREATE DATABASE {name}")).expect("created");
        let db = pool(
            &DbUrl::Postgres(format!("{base}/{name}?sslmode=disable")),
            1,
        );
        // The database is dropped whatever the test found.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            // A new connection after migrating: `migrate` leaves its own one broken.
            migrate(&mut db.get().expect("a connection")).expect("migrated");
            the_sql_writes_what_the_transition_says(&mut db.get().expect("a connection"));
            the_sql_guards_what_each_action_admits(&mut db.get().expect("a connection"));
        }));
        let _ = admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}
