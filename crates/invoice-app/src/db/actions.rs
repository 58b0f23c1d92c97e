//! Queries on `invoice_actions`, the audit trail of what operators did to invoices.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::AnyConnection;
use super::schema::invoice_actions::{self, dsl};
use crate::domain::{Action, RunId};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = invoice_actions)]
pub struct ActionRow {
    /// Time-ordered (UUIDv7).
    pub id: String,
    pub invoice_id: String,
    pub action: Action,
    /// `jwt:<sub>`, `key:<client>` or `dev`.
    pub actor: String,
    pub reason: Option<String>,
    /// The pay run a retry started.
    pub pay_run_id: Option<RunId>,
    pub created_at: NaiveDateTime,
}

impl ActionRow {
    pub fn new(
        invoice_id: &str,
        action: Action,
        actor: &str,
        reason: Option<&str>,
        now: NaiveDateTime,
    ) -> Self {
        ActionRow {
            id: uuid::Uuid::now_v7().to_string(),
            invoice_id: invoice_id.to_owned(),
            action,
            actor: actor.to_owned(),
            reason: reason.map(str::to_owned),
            pay_run_id: None,
            created_at: now,
        }
    }
}

pub fn insert(conn: &mut AnyConnection, row: &ActionRow) -> QueryResult<()> {
    diesel::insert_into(invoice_actions::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

/// A page of invoice `invoice_id`'s actions, oldest first, after `cursor`.
pub fn page(
    conn: &mut AnyConnection,
    invoice_id: &str,
    cursor: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<ActionRow>> {
    let mut query = invoice_actions::table
        .filter(dsl::invoice_id.eq(invoice_id.to_owned()))
        .select(ActionRow::as_select())
        .into_boxed();
    if let Some(cursor) = cursor {
        query = query.filter(dsl::id.gt(cursor.to_owned()));
    }
    query.order(dsl::id).limit(limit).load(conn)
}
