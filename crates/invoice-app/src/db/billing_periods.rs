//! Queries on `billing_periods`: one row per scheduled fire time, so each period is paid by
//! one run across replicas, and caught up by whoever starts first after it was due.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::billing_periods::{self, dsl};
use super::schema::pay_runs;
use super::{AnyConnection, is_unique_violation, pay_runs::PayRunRow};
use crate::domain::RunStatus;

const BASELINE: &str = "baseline";
const RUN: &str = "run";

/// What became of an attempt to take a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    /// The run was recorded as this period's.
    Ours,
    /// Another run has it (running or done).
    Taken,
    /// The first period ever seen: recorded as the baseline, not owed a run.
    Baseline,
}

/// The schedule whose periods were the only ones before `billing_periods.schedule`.
const MONTHLY: &str = "monthly";

/// Takes `period` (due at `due`) of `schedule` for `run`, recording the run with it, unless
/// a live or finished run has it; a period whose run was abandoned or failed is taken over.
/// The first period of a schedule is its baseline, not owed a run.
pub fn take(
    conn: &mut AnyConnection,
    schedule: &str,
    period: &str,
    due: NaiveDateTime,
    run: &PayRunRow,
    now: NaiveDateTime,
) -> QueryResult<Take> {
    let any: i64 = billing_periods::table
        .filter(dsl::schedule.eq(schedule))
        .count()
        .get_result(conn)?;
    // Only the monthly schedule was run before periods were recorded.
    if any == 0 && !(schedule == MONTHLY && owed_before_periods(conn, due)?) {
        let baseline = diesel::insert_into(billing_periods::table)
            .values((
                dsl::period.eq(period),
                dsl::schedule.eq(schedule),
                dsl::kind.eq(BASELINE),
                dsl::taken_at.eq(now),
            ))
            .execute(conn);
        return match baseline {
            Ok(_) => Ok(Take::Baseline),
            Err(e) if is_unique_violation(&e) => Ok(Take::Taken),
            Err(e) => Err(e),
        };
    }
    // The period row and the run row are written together or not at all.
    let inserted = conn.transaction(|c| {
        super::pay_runs::insert(c, run)?;
        diesel::insert_into(billing_periods::table)
            .values((
                dsl::period.eq(period),
                dsl::schedule.eq(schedule),
                dsl::kind.eq(RUN),
                dsl::run_id.eq(&run.id),
                dsl::taken_at.eq(now),
            ))
            .execute(c)
    });
    match inserted {
        Ok(_) => return Ok(Take::Ours),
        Err(e) if is_unique_violation(&e) => {}
        Err(e) => return Err(e),
    }
    let holder: Option<(String, Option<String>)> = billing_periods::table
        .find(period)
        .select((dsl::kind, dsl::run_id))
        .first(conn)
        .optional()?;
    let Some((_, Some(old_run))) = holder.filter(|(kind, _)| kind == RUN) else {
        return Ok(Take::Taken);
    };
    let status: Option<RunStatus> = pay_runs::table
        .find(&old_run)
        .select(pay_runs::status)
        .first(conn)
        .optional()?;
    if !status.is_some_and(|s| matches!(s, RunStatus::Abandoned | RunStatus::Failed)) {
        return Ok(Take::Taken);
    }
    conn.transaction(|c| {
        let moved = diesel::update(
            billing_periods::table
                .find(period)
                .filter(dsl::run_id.eq(&old_run)),
        )
        .set((dsl::run_id.eq(&run.id), dsl::taken_at.eq(now)))
        .execute(c)?;
        if moved == 0 {
            return Ok(Take::Taken);
        }
        super::pay_runs::insert(c, run)?;
        Ok(Take::Ours)
    })
}

/// Before this table existed (a database upgraded from a release without it), a period is
/// owed if runs were made but none by the schedule since it fell due; a database with no
/// runs at all is new and owes nothing.
fn owed_before_periods(conn: &mut AnyConnection, due: NaiveDateTime) -> QueryResult<bool> {
    let runs: i64 = pay_runs::table.count().get_result(conn)?;
    if runs == 0 {
        return Ok(false);
    }
    let paid_since: i64 = pay_runs::table
        .filter(pay_runs::trigger.eq("schedule"))
        .filter(pay_runs::started_at.ge(due))
        .count()
        .get_result(conn)?;
    Ok(paid_since == 0)
}
