//! Queries on `pay_runs`.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::AnyConnection;
use super::schema::pay_runs::{self, dsl};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = pay_runs)]
pub struct PayRunRow {
    pub id: String,
    pub trigger: String,
    pub status: String,
    pub paid: i32,
    pub failed: i32,
    pub retry_later: i32,
    pub error: Option<String>,
    pub started_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
    /// Who started it through the API; `None` for the schedule and the CLI.
    pub started_by: Option<String>,
}

pub fn insert(conn: &mut AnyConnection, run: &PayRunRow) -> QueryResult<()> {
    diesel::insert_into(pay_runs::table)
        .values(run)
        .execute(conn)
        .map(|_| ())
}

pub fn finish(conn: &mut AnyConnection, run: &PayRunRow) -> QueryResult<()> {
    diesel::update(pay_runs::table.find(&run.id))
        .set((
            dsl::status.eq(&run.status),
            dsl::paid.eq(run.paid),
            dsl::failed.eq(run.failed),
            dsl::retry_later.eq(run.retry_later),
            dsl::error.eq(&run.error),
            dsl::finished_at.eq(run.finished_at),
        ))
        .execute(conn)
        .map(|_| ())
}

pub fn find(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<PayRunRow>> {
    pay_runs::table
        .find(id)
        .select(PayRunRow::as_select())
        .first(conn)
        .optional()
}
