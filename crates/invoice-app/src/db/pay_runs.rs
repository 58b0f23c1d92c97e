//! Queries on `pay_runs`.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::AnyConnection;
use super::schema::pay_runs::{self, dsl};

use crate::domain::{RunId, RunKind, RunStatus, Summary, Trigger, WorkerId};

const RUNNING: RunStatus = RunStatus::Running;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = pay_runs)]
pub struct PayRunRow {
    pub id: RunId,
    pub trigger: Trigger,
    pub status: RunStatus,
    pub paid: i32,
    pub failed: i32,
    pub retry_later: i32,
    pub error: Option<String>,
    pub started_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
    pub worker_id: Option<WorkerId>,
    pub heartbeat_at: Option<NaiveDateTime>,
    /// Who started it through the API; `None` for the schedule and the CLI.
    pub started_by: Option<String>,
    pub kind: RunKind,
}

pub fn insert(conn: &mut AnyConnection, run: &PayRunRow) -> QueryResult<()> {
    diesel::insert_into(pay_runs::table)
        .values(run)
        .execute(conn)
        .map(|_| ())
}

/// Adds to the run's counts and shows it alive; false if the run is no longer running
/// (closed as abandoned while its process stalled): it must not write any more.
pub fn add(
    conn: &mut AnyConnection,
    id: &RunId,
    counts: Summary,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    // The columns are 32-bit; one transaction adds at most a batch.
    let n = |count: i64| i32::try_from(count).unwrap_or(i32::MAX);
    diesel::update(pay_runs::table.find(id).filter(dsl::status.eq(RUNNING)))
        .set((
            dsl::paid.eq(dsl::paid + n(counts.paid)),
            dsl::failed.eq(dsl::failed + n(counts.failed)),
            dsl::retry_later.eq(dsl::retry_later + n(counts.retry_later)),
            dsl::heartbeat_at.eq(now),
        ))
        .execute(conn)
        .map(|n| n == 1)
}

/// Whether the run is still open.
pub fn is_running(conn: &mut AnyConnection, id: &RunId) -> QueryResult<bool> {
    pay_runs::table
        .find(id)
        .filter(dsl::status.eq(RUNNING))
        .count()
        .get_result::<i64>(conn)
        .map(|n| n == 1)
}

/// Whether the run is still open, holding it open until the transaction ends. Called first
/// in the transaction, before any other row is locked (the order closing takes too).
/// PostgreSQL: a `KEY SHARE` lock, which closing the run ([`lock_for_close`]) waits for, and
/// which heartbeats and counts (plain updates) do not; so an attempt recorded under it
/// either commits before the run is closed (and the closer sees it) or finds it closed.
/// SQLite: a write that changes nothing, so the transaction holds the database's one write
/// lock from its first statement (a deferred transaction that reads first cannot take it
/// once another writer has committed).
pub fn hold_open(conn: &mut AnyConnection, id: &RunId) -> QueryResult<bool> {
    match conn {
        AnyConnection::Postgresql(pg) => pay_runs::table
            .find(id)
            .filter(dsl::status.eq(RUNNING))
            .select(dsl::id)
            .for_key_share()
            .first::<RunId>(pg)
            .optional()
            .map(|found| found.is_some()),
        AnyConnection::Sqlite(_) => {
            diesel::update(pay_runs::table.find(id).filter(dsl::status.eq(RUNNING)))
                .set(dsl::status.eq(dsl::status))
                .execute(conn)
                .map(|n| n == 1)
        }
    }
}

/// Takes the rows of `ids` still running for a change of status, first thing in the
/// transaction: on PostgreSQL `FOR UPDATE`, which waits for every attempt being recorded
/// under [`hold_open`] and keeps new ones out; the runs' attempts and invoices are locked
/// after it, in the order a settlement takes them (see [`hold_for_settlement`]). On SQLite
/// a write that changes nothing comes first, for the write lock. Returns those ids.
pub fn lock_for_close(conn: &mut AnyConnection, ids: &[RunId]) -> QueryResult<Vec<RunId>> {
    let running = pay_runs::table
        .filter(dsl::id.eq_any(ids))
        .filter(dsl::status.eq(RUNNING))
        .select(dsl::id)
        .order(dsl::id);
    match conn {
        AnyConnection::Postgresql(pg) => running.for_update().load(pg),
        AnyConnection::Sqlite(_) => {
            diesel::update(
                pay_runs::table
                    .filter(dsl::id.eq_any(ids))
                    .filter(dsl::status.eq(RUNNING)),
            )
            .set(dsl::status.eq(dsl::status))
            .execute(conn)?;
            running.load(conn)
        }
    }
}

/// Whether the run is still open, locking its row on PostgreSQL before a settlement
/// touches the attempts and invoices, so that a settlement and a close take the run first
/// and cannot deadlock. Compatible with [`hold_open`]: attempts keep starting meanwhile.
pub fn hold_for_settlement(conn: &mut AnyConnection, id: &RunId) -> QueryResult<bool> {
    match conn {
        AnyConnection::Postgresql(pg) => pay_runs::table
            .find(id)
            .filter(dsl::status.eq(RUNNING))
            .select(dsl::id)
            .for_no_key_update()
            .first::<RunId>(pg)
            .optional()
            .map(|found| found.is_some()),
        // A read first would keep a deferred SQLite transaction from taking the write lock;
        // writes are serial there anyway, and `add` tells at the end.
        AnyConnection::Sqlite(_) => Ok(true),
    }
}

pub fn heartbeat(conn: &mut AnyConnection, id: &RunId, now: NaiveDateTime) -> QueryResult<()> {
    diesel::update(pay_runs::table.find(id).filter(dsl::status.eq(RUNNING)))
        .set(dsl::heartbeat_at.eq(now))
        .execute(conn)
        .map(|_| ())
}

/// Closes a run with its final status; the counts are already on the row. A run closed as
/// abandoned meanwhile stays so (false): whoever closed it may have taken its work over.
pub fn finish(
    conn: &mut AnyConnection,
    id: &RunId,
    status: RunStatus,
    error: Option<&str>,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    diesel::update(pay_runs::table.find(id).filter(dsl::status.eq(RUNNING)))
        .set((
            dsl::status.eq(status),
            dsl::error.eq(error),
            dsl::finished_at.eq(now),
            dsl::heartbeat_at.eq(now),
        ))
        .execute(conn)
        .map(|n| n == 1)
}

/// The running runs whose heartbeat is older than `stale_before` (their process died), or,
/// with `worker`, that worker's running runs (it is stopping).
pub fn open_runs(
    conn: &mut AnyConnection,
    stale_before: NaiveDateTime,
    worker: Option<&WorkerId>,
) -> QueryResult<Vec<RunId>> {
    let query = pay_runs::table
        .select(dsl::id)
        .filter(dsl::status.eq(RUNNING))
        .into_boxed();
    match worker {
        Some(worker) => query.filter(dsl::worker_id.eq(worker.clone())),
        None => query.filter(
            dsl::heartbeat_at.lt(stale_before).or(dsl::heartbeat_at
                .is_null()
                .and(dsl::started_at.lt(stale_before))),
        ),
    }
    .load(conn)
}

/// Closes those of `ids` still running as abandoned, with `why`; their counts stay.
pub fn abandon(
    conn: &mut AnyConnection,
    ids: &[RunId],
    why: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        pay_runs::table
            .filter(dsl::id.eq_any(ids))
            .filter(dsl::status.eq(RUNNING)),
    )
    .set((
        dsl::status.eq(RunStatus::Abandoned),
        dsl::error.eq(why),
        dsl::finished_at.eq(now),
    ))
    .execute(conn)
}

/// Runs by status, and the invoices all runs settled, by result (paid, failed,
/// retry_later): every run's, whichever process ran it.
pub fn totals(conn: &mut AnyConnection) -> QueryResult<(Vec<(String, i64)>, Summary)> {
    let by_status = pay_runs::table
        .group_by(dsl::status)
        .select((dsl::status, diesel::dsl::count_star()))
        .load(conn)?;
    let (paid, failed, retry_later): (Option<i64>, Option<i64>, Option<i64>) = pay_runs::table
        .select((
            diesel::dsl::sum(dsl::paid),
            diesel::dsl::sum(dsl::failed),
            diesel::dsl::sum(dsl::retry_later),
        ))
        .get_result(conn)?;
    Ok((
        by_status,
        Summary {
            paid: paid.unwrap_or(0),
            failed: failed.unwrap_or(0),
            retry_later: retry_later.unwrap_or(0),
        },
    ))
}

/// When the oldest running run started.
pub fn oldest_running(conn: &mut AnyConnection) -> QueryResult<Option<NaiveDateTime>> {
    pay_runs::table
        .filter(dsl::status.eq(RUNNING))
        .select(diesel::dsl::min(dsl::started_at))
        .get_result(conn)
}

/// When the last completed run of `kind` finished.
pub fn last_completed(
    conn: &mut AnyConnection,
    kind: RunKind,
) -> QueryResult<Option<NaiveDateTime>> {
    pay_runs::table
        .filter(dsl::status.eq(RunStatus::Completed))
        .filter(dsl::kind.eq(kind))
        .select(diesel::dsl::max(dsl::finished_at))
        .get_result(conn)
}

pub fn find(conn: &mut AnyConnection, id: &RunId) -> QueryResult<Option<PayRunRow>> {
    pay_runs::table
        .find(id)
        .select(PayRunRow::as_select())
        .first(conn)
        .optional()
}
