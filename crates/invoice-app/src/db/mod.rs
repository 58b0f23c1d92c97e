//! Storage: the pool, the migrations and one module of queries per table. Functions here
//! take a connection and return diesel errors; callers decide what those mean.

pub mod actions;
pub mod attempts;
pub mod billing_periods;
pub mod clock;
pub mod idempotency_keys;
pub mod invoices;
pub mod pay_runs;
mod pool;
pub mod schema;
mod text;

pub use pool::{AnyConnection, DbConn, DbPool, DbUrl, SessionLimits, migrate, pool, pool_with};

use diesel::QueryResult;
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

/// What a piece of database work returns: a diesel [`QueryResult`], whose error becomes a
/// [`DbError`], or a result in the caller's own error type (one a pool failure converts
/// into), for work that decides more than whether its queries worked.
pub trait Outcome {
    type Value;
    type Error: From<DbError>;
    fn into_result(self) -> Result<Self::Value, Self::Error>;
}

impl<T> Outcome for QueryResult<T> {
    type Value = T;
    type Error = DbError;
    fn into_result(self) -> Result<T, DbError> {
        self.map_err(DbError::from)
    }
}

impl<T, E: From<DbError>> Outcome for Result<T, E> {
    type Value = T;
    type Error = E;
    fn into_result(self) -> Result<T, E> {
        self
    }
}

/// Runs blocking diesel work on tokio's blocking pool, inside the caller's span. A call
/// that fails on a connection the server dropped discards it, and every other idle one
/// that is dead too, so the next call gets a fresh one (see [`pool::discard_if_dead`]).
pub async fn run<R, F>(pool: &DbPool, work: F) -> Result<R::Value, R::Error>
where
    F: FnOnce(&mut AnyConnection) -> R + Send + 'static,
    R: Outcome,
    R::Value: Send + 'static,
    R::Error: Send + 'static,
{
    blocking(pool, move |pool| once(pool, |c| work(c).into_result()).0).await
}

/// [`run`] for work that only reads: when it failed on a dead connection, it is run once
/// more on a fresh one (repeating a read changes nothing; a write is never repeated).
pub async fn read<R, F>(pool: &DbPool, work: F) -> Result<R::Value, R::Error>
where
    F: Fn(&mut AnyConnection) -> R + Send + 'static,
    R: Outcome,
    R::Value: Send + 'static,
    R::Error: Send + 'static,
{
    let work = move |c: &mut AnyConnection| work(c).into_result();
    blocking(pool, move |pool| match once(pool, &work) {
        (Err(_), true) => once(pool, &work).0,
        (result, _) => result,
    })
    .await
}

/// `task` on tokio's blocking pool, inside the caller's span; a task that panicked reads
/// as the database being unavailable.
async fn blocking<T, E, F>(pool: &DbPool, task: F) -> Result<T, E>
where
    F: FnOnce(&DbPool) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<DbError> + Send + 'static,
{
    let pool = pool.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        task(&pool)
    })
    .instrument(tracing::Span::current())
    .await
    .unwrap_or_else(|join| {
        Err(E::from(DbError::Unavailable(format!(
            "database task failed: {join}"
        ))))
    })
}

/// One go on one pooled connection; the result, and whether the connection was dead.
fn once<T, E, F>(pool: &DbPool, work: F) -> (Result<T, E>, bool)
where
    F: FnOnce(&mut AnyConnection) -> Result<T, E>,
    E: From<DbError>,
{
    let mut conn = match pool.get() {
        Ok(conn) => conn,
        Err(e) => return (Err(E::from(DbError::Unavailable(e.to_string()))), false),
    };
    let result = work(&mut conn);
    let dead = result.is_err() && pool::discard_if_dead(pool, &mut conn);
    (result, dead)
}

/// Whether the database answers a query.
pub async fn ping(pool: &DbPool) -> Result<(), DbError> {
    use diesel::RunQueryDsl;
    read(pool, |c| {
        diesel::sql_query("SELECT 1").execute(c).map(|_| ())
    })
    .await
}

/// Whether a diesel error is a unique-key violation (an intended conflict, not a fault).
pub fn is_unique_violation(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}
