//! Queries on `payment_attempts`, the audit trail of every call to the provider.

use api_contract::ErrorCode;
use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::AnyConnection;
use super::schema::payment_attempts::{self, dsl};
use crate::domain::{AttemptId, AttemptKind, AttemptOutcome, InvoiceStatus, RunId, Sent, Trigger};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = payment_attempts)]
pub struct AttemptRow {
    pub id: AttemptId,
    pub invoice_id: String,
    pub pay_run_id: RunId,
    pub idempotency_key: String,
    pub outcome: AttemptOutcome,
    pub http_status: Option<i32>,
    pub detail: Option<String>,
    pub charge_id: Option<String>,
    pub started_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
    pub sent: Option<Sent>,
    /// The provider's code of a decline; `None` for every other outcome.
    pub provider_code: Option<String>,
    pub kind: AttemptKind,
}

pub fn start(conn: &mut AnyConnection, attempt: &AttemptRow) -> QueryResult<()> {
    diesel::insert_into(payment_attempts::table)
        .values(attempt)
        .execute(conn)
        .map(|_| ())
}

/// Records many attempts at once: one statement on PostgreSQL, one transaction on SQLite
/// (whose multi-row insert diesel builds only for the SQLite connection itself).
pub fn start_all(conn: &mut AnyConnection, all: &[AttemptRow]) -> QueryResult<()> {
    match conn {
        AnyConnection::Postgresql(pg) => diesel::insert_into(payment_attempts::table)
            .values(all)
            .execute(pg)
            .map(|_| ()),
        AnyConnection::Sqlite(sqlite) => sqlite.transaction(|c| {
            for attempt in all {
                diesel::insert_into(payment_attempts::table)
                    .values(attempt)
                    .execute(c)?;
            }
            Ok(())
        }),
    }
}

/// The result of one call, as its attempt record keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub attempt_id: AttemptId,
    pub outcome: AttemptOutcome,
    /// Whether the request left.
    pub sent: Sent,
    pub http_status: Option<u16>,
    pub detail: Option<String>,
    pub charge_id: Option<String>,
    /// The code the provider declined it with.
    pub provider_code: Option<ErrorCode>,
}

pub fn finish(conn: &mut AnyConnection, result: &Finished, now: NaiveDateTime) -> QueryResult<()> {
    diesel::update(payment_attempts::table.find(&result.attempt_id))
        .set((
            dsl::outcome.eq(result.outcome),
            dsl::sent.eq(result.sent),
            dsl::http_status.eq(result.http_status.map(i32::from)),
            dsl::detail.eq(result.detail.as_deref()),
            dsl::charge_id.eq(result.charge_id.as_deref()),
            dsl::provider_code.eq(result.provider_code.map(ErrorCode::as_str)),
            dsl::finished_at.eq(now),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Completes many attempts at once: one statement on PostgreSQL (a round trip per attempt
/// was most of a settlement's cost), one update each on SQLite, which has no round trips.
pub fn finish_all(
    conn: &mut AnyConnection,
    all: &[&Finished],
    now: NaiveDateTime,
) -> QueryResult<()> {
    use diesel::sql_types::{Array, Integer, Nullable, Text, Timestamp};
    match conn {
        AnyConnection::Postgresql(pg) => {
            if all.is_empty() {
                return Ok(());
            }
            let ids: Vec<&str> = all.iter().map(|f| f.attempt_id.as_str()).collect();
            let outcomes: Vec<&str> = all.iter().map(|f| f.outcome.as_str()).collect();
            let sent: Vec<&str> = all.iter().map(|f| f.sent.as_str()).collect();
            let statuses: Vec<Option<i32>> =
                all.iter().map(|f| f.http_status.map(i32::from)).collect();
            let details: Vec<Option<&str>> = all.iter().map(|f| f.detail.as_deref()).collect();
            let charges: Vec<Option<&str>> = all.iter().map(|f| f.charge_id.as_deref()).collect();
            let codes: Vec<Option<&str>> = all
                .iter()
                .map(|f| f.provider_code.map(ErrorCode::as_str))
                .collect();
            diesel::sql_query(
                "UPDATE payment_attempts AS a \
                 SET outcome = v.outcome, sent = v.sent, http_status = v.http_status, \
                     detail = v.detail, charge_id = v.charge_id, \
                     provider_code = v.provider_code, finished_at = $8 \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[], \
                     $6::text[], $7::text[]) \
                     AS v (id, outcome, sent, http_status, detail, charge_id, provider_code) \
                 WHERE a.id = v.id",
            )
            .bind::<Array<Text>, _>(ids)
            .bind::<Array<Text>, _>(outcomes)
            .bind::<Array<Text>, _>(sent)
            .bind::<Array<Nullable<Integer>>, _>(statuses)
            .bind::<Array<Nullable<Text>>, _>(details)
            .bind::<Array<Nullable<Text>>, _>(charges)
            .bind::<Array<Nullable<Text>>, _>(codes)
            .bind::<Timestamp, _>(now)
            .execute(pg)
            .map(|_| ())
        }
        AnyConnection::Sqlite(_) => all.iter().try_for_each(|result| finish(conn, result, now)),
    }
}

/// Closes the attempts of `runs` still marked started: their process died during the
/// call, so nobody knows whether it arrived (the next call with the same key tells).
pub fn interrupt(
    conn: &mut AnyConnection,
    runs: &[RunId],
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        payment_attempts::table
            .filter(dsl::outcome.eq(AttemptOutcome::Started))
            .filter(dsl::pay_run_id.eq_any(runs)),
    )
    .set((
        dsl::outcome.eq(AttemptOutcome::Interrupted),
        dsl::sent.eq(Sent::Unknown),
        dsl::detail.eq("the process stopped during the call; the next call with the same key tells whether it was charged"),
        dsl::finished_at.eq(now),
    ))
    .execute(conn)
}

pub fn for_invoice(conn: &mut AnyConnection, invoice_id: &str) -> QueryResult<Vec<AttemptRow>> {
    payment_attempts::table
        .filter(dsl::invoice_id.eq(invoice_id))
        .order((dsl::started_at, dsl::id))
        .select(AttemptRow::as_select())
        .load(conn)
}

/// An attempt with what started its pay run: the run's trigger and, through the API, who.
pub type AttemptWithRun = (AttemptRow, Option<Trigger>, Option<String>);

/// A page of `invoice_id`'s attempts in id order (time-ordered UUIDv7s: the order they
/// started in), after `cursor` when given, each with its run's trigger and starter. A left
/// join: an attempt whose run row is missing is still listed, with neither.
pub fn page(
    conn: &mut AnyConnection,
    invoice_id: &str,
    cursor: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<AttemptWithRun>> {
    use super::schema::pay_runs;
    let mut query = payment_attempts::table
        .left_join(pay_runs::table.on(pay_runs::id.eq(dsl::pay_run_id)))
        .filter(dsl::invoice_id.eq(invoice_id.to_owned()))
        .select((
            AttemptRow::as_select(),
            pay_runs::trigger.nullable(),
            pay_runs::started_by.nullable(),
        ))
        .into_boxed();
    if let Some(cursor) = cursor {
        query = query.filter(dsl::id.gt(cursor.to_owned()));
    }
    query.order(dsl::id).limit(limit).load(conn)
}

/// When the oldest invoice still pending or processing was first tried: the billing
/// objective's clock (docs/slo.md). Invoices waiting for a person (`attention`) are left
/// out: their own alert covers them. Read through the few unsettled invoices and the
/// attempts' invoice index, not the whole audit trail.
pub fn oldest_unsettled(conn: &mut AnyConnection) -> QueryResult<Option<NaiveDateTime>> {
    use super::schema::invoices;
    let unsettled = invoices::table
        .select(invoices::id)
        .filter(invoices::status.eq_any([InvoiceStatus::Pending, InvoiceStatus::Processing]))
        .filter(invoices::attention.is_null());
    payment_attempts::table
        .filter(dsl::invoice_id.eq_any(unsettled))
        .select(diesel::dsl::min(dsl::started_at))
        .get_result(conn)
}

/// Attempts started since `since` whose call has ended, by outcome, and how many of them
/// got no HTTP answer: what every process (API, schedule, the CronJob's CLI) did lately.
pub fn recent(
    conn: &mut AnyConnection,
    since: NaiveDateTime,
) -> QueryResult<(Vec<(String, i64)>, i64)> {
    let ended = || {
        payment_attempts::table
            .filter(dsl::started_at.ge(since))
            // Charges only: a lookup is no charge attempt (reconciliation counts its own).
            .filter(dsl::kind.eq(AttemptKind::Charge))
            .filter(dsl::outcome.ne_all([AttemptOutcome::Started, AttemptOutcome::Interrupted]))
    };
    let by_outcome = ended()
        .group_by(dsl::outcome)
        .select((dsl::outcome, diesel::dsl::count_star()))
        .load(conn)?;
    let unanswered = ended()
        .filter(dsl::http_status.is_null())
        .count()
        .get_result(conn)?;
    Ok((by_outcome, unanswered))
}
