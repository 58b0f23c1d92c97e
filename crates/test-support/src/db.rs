//! A database of its own for every test, cloned from a template that already carries the
//! service's migrations: PostgreSQL `CREATE DATABASE … TEMPLATE`, a copied file on SQLite.
//! nextest runs each test in a process of its own, so the template is shared through the
//! server and the temporary directory, named by a hash of the migrations it carries, and
//! made by whichever test process needs it first.

use std::path::{Path, PathBuf};

use diesel::migration::{Migration, MigrationSource};
use diesel::sql_types::Bool;
use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Whether tests on this backend run here: PostgreSQL needs `TEST_DATABASE_URL`. Under
    /// `CI=true` a missing one fails the test instead of skipping it.
    pub fn runs_here(self) -> bool {
        match self {
            Backend::Sqlite => true,
            Backend::Postgres => postgres_server().is_some(),
        }
    }
}

fn postgres_server() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "TEST_DATABASE_URL must be set when CI=true"
            );
            None
        }
    }
}

/// Whose migrations a test database carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    InvoiceApp,
    PaymentProvider,
}

impl Service {
    fn crate_name(self) -> &'static str {
        match self {
            Service::InvoiceApp => "invoice-app",
            Service::PaymentProvider => "payment-provider",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Service::InvoiceApp => "ia",
            Service::PaymentProvider => "pp",
        }
    }
}

/// Where a test database lives, as either service's `DbUrl` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    Postgres(String),
    Sqlite(String),
}

/// A database that exists for one test and is dropped with it.
pub struct TestDb {
    pub url: DbUrl,
    cleanup: Cleanup,
}

enum Cleanup {
    File(PathBuf),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    /// A fresh database with `service`'s migrations applied. Tests reach PostgreSQL through
    /// `both_backends!` or `postgres_only!`, which skip them where it is not configured, so
    /// here a missing `TEST_DATABASE_URL` is a mistake in the test.
    pub fn create(backend: Backend, service: Service) -> TestDb {
        let migrations = Migrations::of(service, backend);
        let name = format!("{}_{}", service.prefix(), uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let template = sqlite_template(&migrations);
                let path = std::env::temp_dir().join(format!("{name}.db"));
                std::fs::copy(&template, &path).unwrap_or_else(|e| {
                    panic!("copying {} to {}: {e}", template.display(), path.display())
                });
                TestDb {
                    url: DbUrl::Sqlite(path.to_string_lossy().into_owned()),
                    cleanup: Cleanup::File(path),
                }
            }
            Backend::Postgres => {
                let server = postgres_server().expect(
                    "TEST_DATABASE_URL is set (run PostgreSQL tests through both_backends! or postgres_only!)",
                );
                let base = server_base(&server);
                let query = test_query(&server);
                let admin_url = format!("{base}/postgres?{query}");
                let mut admin = PgConnection::establish(&admin_url).unwrap_or_else(|e| {
                    panic!("PostgreSQL at TEST_DATABASE_URL is unreachable: {e}")
                });
                let template = postgres_template(&mut admin, base, &query, &migrations);
                execute(
                    &mut admin,
                    &format!("CREATE DATABASE {name} TEMPLATE {template}"),
                );
                TestDb {
                    url: DbUrl::Postgres(format!("{base}/{name}?{query}")),
                    cleanup: Cleanup::Postgres { admin_url, name },
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(path) => remove_sqlite(path),
            Cleanup::Postgres { admin_url, name } => {
                if let Ok(mut admin) = PgConnection::establish(admin_url) {
                    let _ =
                        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut admin);
                }
            }
        }
    }
}

fn remove_sqlite(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.to_path_buf().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

/// A service's migrations for one backend as this checkout holds them (read at run time,
/// like every repository path here): the shared `migrations/`, then `migrations-<backend>/`
/// where the service has one, in that order, as the service runs them; and the template
/// name of exactly that set.
struct Migrations {
    dirs: Vec<PathBuf>,
    template: String,
    /// The advisory lock that makes one process build the PostgreSQL template.
    lock_id: i64,
}

impl Migrations {
    fn of(service: Service, backend: Backend) -> Migrations {
        let root = crate::repo_root().join("crates").join(service.crate_name());
        let own = match backend {
            Backend::Sqlite => "migrations-sqlite",
            Backend::Postgres => "migrations-postgres",
        };
        let dirs: Vec<PathBuf> = [root.join("migrations"), root.join(own)]
            .into_iter()
            .filter(|dir| dir.is_dir())
            .collect();
        let mut hasher = Sha256::new();
        for dir in &dirs {
            hasher.update(hash_files(dir).as_bytes());
            hasher.update(
                dir.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
        }
        let hash = hex::encode(hasher.finalize());
        Migrations {
            template: format!("tmpl_{}_{}", service.prefix(), &hash[..16]),
            // 15 hex digits fit a positive i64.
            lock_id: i64::from_str_radix(&hash[..15], 16).expect("hex digits"),
            dirs,
        }
    }

    /// Every directory's migrations as one sequence by version, as the service runs them.
    fn run<C>(&self, conn: &mut C)
    where
        C: MigrationHarness<C::Backend> + diesel::Connection,
        FileBasedMigrations: MigrationSource<C::Backend>,
    {
        let sources = self
            .dirs
            .iter()
            .map(|dir| {
                FileBasedMigrations::from_path(dir)
                    .unwrap_or_else(|e| panic!("migrations in {}: {e}", dir.display()))
            })
            .collect();
        conn.run_pending_migrations(AllOf(sources))
            .unwrap_or_else(|e| panic!("running the migrations in {:?}: {e}", self.dirs));
    }
}

/// Several directories of migrations as one source: the harness sorts them by version.
struct AllOf(Vec<FileBasedMigrations>);

impl<DB: diesel::backend::Backend> MigrationSource<DB> for AllOf
where
    FileBasedMigrations: MigrationSource<DB>,
{
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn Migration<DB>>>> {
        let mut all = Vec::new();
        for source in &self.0 {
            all.extend(source.migrations()?);
        }
        Ok(all)
    }
}

/// SHA-256 over every file under `dir`, each as its relative path and its contents, in path
/// order: any change to a migration names another template.
fn hash_files(dir: &Path) -> String {
    fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                collect(&path, files);
            } else {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    collect(dir, &mut files);
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let relative = file.strip_prefix(dir).expect("under the directory");
        let contents =
            std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update((contents.len() as u64).to_le_bytes());
        hasher.update(&contents);
    }
    hex::encode(hasher.finalize())
}

/// The migrated template file, made on first use. It is built under a name of its own and
/// renamed into place, so no test copies a half-migrated file, and two processes that race
/// each build a whole one.
fn sqlite_template(migrations: &Migrations) -> PathBuf {
    let template = std::env::temp_dir().join(format!("{}.db", migrations.template));
    if template.is_file() {
        return template;
    }
    let building = std::env::temp_dir().join(format!(
        "{}-{}.building",
        migrations.template,
        uuid::Uuid::new_v4().simple()
    ));
    {
        let path = building.to_string_lossy();
        let mut conn =
            SqliteConnection::establish(&path).unwrap_or_else(|e| panic!("creating {path}: {e}"));
        migrations.run(&mut conn);
    }
    std::fs::rename(&building, &template)
        .unwrap_or_else(|e| panic!("renaming {} into place: {e}", building.display()));
    remove_sqlite(&building);
    template
}

/// The migrated template database, made on first use under an advisory lock, then renamed
/// into place. Nothing stays connected to it: `CREATE DATABASE … TEMPLATE` refuses a
/// template with sessions.
fn postgres_template(
    admin: &mut PgConnection,
    base: &str,
    query: &str,
    migrations: &Migrations,
) -> String {
    let template = &migrations.template;
    if database_exists(admin, template) {
        return template.clone();
    }
    execute(
        admin,
        &format!("SELECT pg_advisory_lock({})", migrations.lock_id),
    );
    if !database_exists(admin, template) {
        // A process that died while building leaves this behind; the lock says none is now.
        let building = format!("{template}_building");
        execute(admin, &format!("DROP DATABASE IF EXISTS {building}"));
        execute(admin, &format!("CREATE DATABASE {building}"));
        {
            let url = format!("{base}/{building}?{query}");
            let mut conn = PgConnection::establish(&url)
                .unwrap_or_else(|e| panic!("connecting to {building}: {e}"));
            migrations.run(&mut conn);
        }
        execute(
            admin,
            &format!("ALTER DATABASE {building} RENAME TO {template}"),
        );
    }
    execute(
        admin,
        &format!("SELECT pg_advisory_unlock({})", migrations.lock_id),
    );
    template.clone()
}

fn database_exists(admin: &mut PgConnection, name: &str) -> bool {
    // Our own names (a prefix and hex digits): nothing to quote.
    diesel::select(diesel::dsl::sql::<Bool>(&format!(
        "EXISTS (SELECT 1 FROM pg_database WHERE datname = '{name}')"
    )))
    .get_result(admin)
    .unwrap_or_else(|e| panic!("looking up database {name}: {e}"))
}

fn execute(conn: &mut PgConnection, sql: &str) {
    diesel::sql_query(sql)
        .execute(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The query of `TEST_DATABASE_URL`, with `sslmode=disable` unless it names a mode. Tests
/// talk to a server on this machine, and without TLS no OpenSSL clean-up at the exit of a
/// test process can race a pool thread's live connection (seen once as a heap corruption
/// after a passing test).
fn test_query(url: &str) -> String {
    match url.split_once('?').map(|(_, q)| q) {
        Some(q) if q.contains("sslmode=") => q.to_owned(),
        Some(q) if !q.is_empty() => format!("{q}&sslmode=disable"),
        _ => "sslmode=disable".to_owned(),
    }
}

/// `postgres://user@host:port` without any database name or query.
fn server_base(url: &str) -> &str {
    let url = url.split('?').next().unwrap_or(url);
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(slash) => &url[..after_scheme + slash],
        None => url.trim_end_matches('/'),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_databases_use_no_tls_unless_told() {
        assert_eq!(super::test_query("postgres://h"), "sslmode=disable");
        assert_eq!(
            super::test_query("postgres://h/db?x=1"),
            "x=1&sslmode=disable"
        );
        assert_eq!(
            super::test_query("postgres://h?sslmode=require"),
            "sslmode=require"
        );
    }

    #[test]
    fn server_base_strips_database_and_query() {
        assert_eq!(
            super::server_base("postgres://u@h:5432"),
            "postgres://u@h:5432"
        );
        assert_eq!(
            super::server_base("postgres://u@h:5432/"),
            "postgres://u@h:5432"
        );
        assert_eq!(
            super::server_base("postgres://u@h/db?sslmode=disable"),
            "postgres://u@h"
        );
    }
}
