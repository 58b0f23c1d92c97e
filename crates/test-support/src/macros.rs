//! The tests' entry points, where PostgreSQL tests are skipped when it is not configured
//! (and fail under `CI=true`): the one place that decides, so no test body checks.

/// Runs each `async fn(Backend)` once per backend, as `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if $crate::Backend::Postgres.runs_here() {
                    super::$name($crate::Backend::Postgres).await
                }
            })*
        }
    };
}

/// `test_name => body`: a test of PostgreSQL alone that runs `async fn body()`.
#[macro_export]
macro_rules! postgres_only {
    ($($test:ident => $body:ident),* $(,)?) => {
        $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            if $crate::Backend::Postgres.runs_here() {
                $body().await
            }
        })*
    };
}
