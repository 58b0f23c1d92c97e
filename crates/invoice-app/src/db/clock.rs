//! The database's time, which decides money: leases, heartbeats, when a past-due invoice is
//! due, which billing period has passed. Replicas whose own clocks disagree then still agree
//! on whether a claim has lapsed or a run has gone silent.
//!
//! It is read as this process's clock plus an offset measured against PostgreSQL's
//! `clock_timestamp()` at start-up and every few seconds after, rather than asked of the
//! database for every decision: the same answer to within half a round trip, without a round
//! trip per call. SQLite is embedded, so its clock is this process's.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::sql_types::Timestamptz;

use super::{AnyConnection, DbPool};

/// How far the database's clock is ahead of this process's, in microseconds. One process
/// uses one database, so one offset serves it.
static OFFSET_MICROS: AtomicI64 = AtomicI64::new(0);

/// The local demo's shift of an embedded SQLite database's clock (`DEV_CLOCK_SHIFT`); the
/// configuration refuses it anywhere else.
static SQLITE_SHIFT_MICROS: AtomicI64 = AtomicI64::new(0);

/// Moves the clock of an embedded SQLite database `shift` ahead of this process's, from
/// the next [`sync`] on: the local demo reaches a dunning retry days away this way.
pub fn shift_sqlite(shift: TimeDelta) {
    SQLITE_SHIFT_MICROS.store(shift.num_microseconds().unwrap_or(0), Ordering::Relaxed);
}

/// How often the offset is measured again (an adjusted system clock is followed within it).
pub const RESYNC: Duration = Duration::from_secs(5);

/// An offset this large is logged as a warning: the process's clock is badly off.
const WARN_OFFSET: TimeDelta = TimeDelta::seconds(1);

/// The database's time now, as the timestamp columns hold it (UTC).
pub fn now() -> NaiveDateTime {
    utc_now().naive_utc()
}

pub fn utc_now() -> DateTime<Utc> {
    Utc::now() + offset()
}

/// How far the database's clock is ahead of this process's, as last measured.
pub fn offset() -> TimeDelta {
    TimeDelta::microseconds(OFFSET_MICROS.load(Ordering::Relaxed))
}

/// Measures the offset on `conn` and keeps it; returns it. The database's reading is taken
/// as of the middle of the round trip.
pub fn sync(conn: &mut AnyConnection) -> QueryResult<TimeDelta> {
    let offset = match conn {
        AnyConnection::Postgresql(pg) => {
            let before = Utc::now();
            let database: DateTime<Utc> =
                diesel::select(diesel::dsl::sql::<Timestamptz>("clock_timestamp()"))
                    .get_result(pg)?;
            let after = Utc::now();
            database - (before + (after - before) / 2)
        }
        // Nothing to measure; the demo's shift is no clock being off.
        AnyConnection::Sqlite(_) => {
            let shift = SQLITE_SHIFT_MICROS.load(Ordering::Relaxed);
            OFFSET_MICROS.store(shift, Ordering::Relaxed);
            return Ok(TimeDelta::microseconds(shift));
        }
    };
    let previous = OFFSET_MICROS.swap(
        offset.num_microseconds().unwrap_or(i64::MAX),
        Ordering::Relaxed,
    );
    if offset.abs() >= WARN_OFFSET
        && (offset - TimeDelta::microseconds(previous)).abs() >= WARN_OFFSET
    {
        tracing::warn!(
            offset_ms = offset.num_milliseconds(),
            "this process's clock is off from the database's; leases, heartbeats and billing \
             follow the database's"
        );
    }
    Ok(offset)
}

/// Measures the offset every [`RESYNC`] for as long as the process runs. A failed
/// measurement keeps the last offset.
pub async fn keep_in_step(pool: DbPool) {
    loop {
        tokio::time::sleep(RESYNC).await;
        if let Err(e) = super::run(&pool, sync).await {
            tracing::debug!(error = %e, "could not read the database's clock; keeping the last offset");
        }
    }
}
