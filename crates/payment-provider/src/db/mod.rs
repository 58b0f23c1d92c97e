//! Storage: the pool, the migrations and one module of queries per table. Functions here
//! take a connection and return diesel errors; callers decide what those mean.

pub mod accounts;
pub mod charges;
pub mod idempotency;
mod pool;
pub mod schema;
mod text;

pub use pool::{AnyConnection, DbConn, DbPool, DbUrl, migrate, pool};

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use tracing::Instrument;

/// Why a database call failed, as far as the caller needs to know.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had: the database is down or overloaded.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Query(DieselError),
}

impl From<DieselError> for DbError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, info)
            | DieselError::DatabaseError(DatabaseErrorKind::UnableToSendCommand, info) => {
                DbError::Unavailable(info.message().to_owned())
            }
            other => DbError::Query(other),
        }
    }
}

/// Runs blocking diesel work on tokio's blocking pool, inside the caller's span.
pub async fn run<T, E, F>(pool: &DbPool, work: F) -> Result<T, E>
where
    F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<DbError> + Send + 'static,
{
    let pool = pool.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let mut conn = pool
            .get()
            .map_err(|e| E::from(DbError::Unavailable(e.to_string())))?;
        work(&mut conn)
    })
    .instrument(tracing::Span::current())
    .await
    .unwrap_or_else(|join| {
        Err(E::from(DbError::Unavailable(format!(
            "database task failed: {join}"
        ))))
    })
}

/// Deletes every key, charge and account: Pact provider states only (see `pact_states`).
pub fn wipe(conn: &mut AnyConnection) -> diesel::QueryResult<()> {
    use diesel::RunQueryDsl;
    diesel::delete(schema::idempotency_keys::table).execute(conn)?;
    diesel::delete(schema::charges::table).execute(conn)?;
    diesel::delete(schema::accounts::table).execute(conn)?;
    Ok(())
}

/// Whether a diesel error is a unique-key violation (an intended conflict, not a fault).
pub fn is_unique_violation(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}
