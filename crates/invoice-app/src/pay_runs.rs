//! Pay runs as the API shows them: read from their rows. Starting and running them is
//! `billing`'s.

use chrono::{DateTime, Utc};

use crate::db::{self, DbError, DbPool, pay_runs::PayRunRow};
use crate::domain::{RunId, RunKind, RunStatus, Summary, Trigger};

/// A pay run as its row has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayRun {
    pub id: RunId,
    pub status: RunStatus,
    pub trigger: Trigger,
    pub kind: RunKind,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The invoices it settled so far, by result.
    pub summary: Summary,
    /// Why it stopped, when it failed or was abandoned.
    pub error: Option<String>,
    /// Who started it through the API; `None` for the schedule and the CLI.
    pub started_by: Option<String>,
}

impl From<PayRunRow> for PayRun {
    fn from(row: PayRunRow) -> Self {
        PayRun {
            summary: Summary {
                paid: row.paid.into(),
                failed: row.failed.into(),
                retry_later: row.retry_later.into(),
            },
            id: row.id,
            status: row.status,
            trigger: row.trigger,
            kind: row.kind,
            started_at: row.started_at.and_utc(),
            finished_at: row.finished_at.map(|t| t.and_utc()),
            error: row.error,
            started_by: row.started_by,
        }
    }
}

/// The run `id`, if there is one.
pub async fn get(pool: &DbPool, id: RunId) -> Result<Option<PayRun>, DbError> {
    let row = db::read(pool, move |c| db::pay_runs::find(c, &id)).await?;
    Ok(row.map(PayRun::from))
}
