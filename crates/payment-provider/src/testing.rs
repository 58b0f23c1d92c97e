//! Test support, used by this crate's tests and by invoice-app's: a fresh database per test
//! on SQLite or PostgreSQL, and the real provider on a random port.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};

use api_contract::{AccountResponse, CustomerId, Money};
use diesel::{Connection, PgConnection, RunQueryDsl};

use crate::auth::CallerTokens;
use crate::config::{Config, Seed};
use crate::db::{self, DbPool, DbUrl, charges::Charge};
use crate::startup::Application;

/// The token tests use for caller `invoice-app`.
pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Logs are silent unless `TEST_LOG` is set.
pub fn init_test_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
                .with_test_writer()
                .try_init();
        }
    });
}

/// A database that exists for one test and is dropped with it.
pub struct TestDb {
    pub url: DbUrl,
    cleanup: Cleanup,
}

enum Cleanup {
    File(std::path::PathBuf),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    /// `None` when PostgreSQL tests are not configured (`TEST_DATABASE_URL` unset). Under
    /// `CI=true` that, or an unreachable server, fails the test instead.
    pub fn create(backend: Backend, prefix: &str) -> Option<TestDb> {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                Some(TestDb {
                    url: DbUrl::Sqlite(path.to_string_lossy().into_owned()),
                    cleanup: Cleanup::File(path),
                })
            }
            Backend::Postgres => {
                let server = match std::env::var("TEST_DATABASE_URL") {
                    Ok(url) if !url.is_empty() => url,
                    _ => {
                        assert!(
                            std::env::var("CI").as_deref() != Ok("true"),
                            "TEST_DATABASE_URL must be set when CI=true"
                        );
                        return None;
                    }
                };
                let base = server_base(&server);
                let query = test_query(&server);
                let admin_url = format!("{base}/postgres?{query}");
                let mut admin = PgConnection::establish(&admin_url).unwrap_or_else(|e| {
                    panic!("PostgreSQL at TEST_DATABASE_URL is unreachable: {e}")
                });
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
                Some(TestDb {
                    url: DbUrl::Postgres(format!("{base}/{name}?{query}")),
                    cleanup: Cleanup::Postgres { admin_url, name },
                })
            }
        }
    }
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

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
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

/// The real provider, serving on a random loopback port with its own database.
pub struct TestProvider {
    pub base_url: String,
    /// Where `/metrics` is served (its own listener).
    pub metrics_url: String,
    pub token: String,
    pub pool: DbPool,
    pub handle: actix_web::dev::ServerHandle,
    config: Config,
    // Dropped last: the database outlives the server's use of it.
    pub db: TestDb,
}

impl TestProvider {
    /// Starts a provider with no accounts; `configure` adjusts the settings (faults, …).
    pub async fn spawn(
        backend: Backend,
        configure: impl FnOnce(&mut Config),
    ) -> Option<TestProvider> {
        init_test_log();
        let db = TestDb::create(backend, "pp")?;
        let mut config = Config::from_lookup(&|_| None).expect("default configuration is valid");
        config.listen_addr = ([127, 0, 0, 1], 0).into();
        config.metrics_addr = ([127, 0, 0, 1], 0).into();
        config.database_url = db.url.clone();
        config.pool_size = config.database_url.default_pool_size();
        config.seed = Seed::None;
        config.callers =
            Some(CallerTokens::parse(&format!("invoice-app:{TEST_TOKEN}")).expect("valid token"));
        configure(&mut config);
        let app = Application::build(config.clone())
            .await
            .expect("payment-provider starts");
        // A restart comes back on the same port.
        config.listen_addr.set_port(app.port());
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let provider = TestProvider {
            base_url: format!("{scheme}://127.0.0.1:{}", app.port()),
            metrics_url: format!("http://127.0.0.1:{}/metrics", app.metrics_port()),
            token: TEST_TOKEN.to_owned(),
            pool: app.pool(),
            handle: app.handle(),
            config,
            db,
        };
        tokio::spawn(app.run_until_stopped());
        Some(provider)
    }

    /// Stops the server at once (requests in flight are cut off, as in a crash).
    pub async fn kill(&self) {
        self.handle.stop(false).await;
    }

    /// Starts the provider again on the same port and database, after [`Self::kill`].
    pub async fn restart(&mut self) {
        let app = Application::build(self.config.clone())
            .await
            .expect("payment-provider restarts");
        self.pool = app.pool();
        self.handle = app.handle();
        self.metrics_url = format!("http://127.0.0.1:{}/metrics", app.metrics_port());
        tokio::spawn(app.run_until_stopped());
    }

    /// Opens an account with `balance`.
    pub async fn fund(&self, customer_id: &str, balance: Money) {
        let account = AccountResponse {
            customer_id: CustomerId::parse(customer_id).expect("valid customer id"),
            balance,
        };
        crate::seed::insert(&self.pool, vec![account])
            .await
            .expect("account created");
    }

    /// Balance in minor units, `None` for no account.
    pub async fn balance(&self, customer_id: &str) -> Option<i64> {
        let id = customer_id.to_owned();
        db::run(&self.pool, move |c| {
            db::accounts::find(c, &id).map_err(anyhow::Error::from)
        })
        .await
        .expect("account lookup")
        .map(|a| a.balance_minor)
    }

    /// Sets an account's balance directly, as a deposit would.
    pub async fn set_balance(&self, customer_id: &str, minor_units: i64) {
        use crate::db::schema::accounts::dsl;
        use diesel::{ExpressionMethods, QueryDsl};
        let id = customer_id.to_owned();
        db::run(&self.pool, move |c| {
            diesel::update(dsl::accounts.find(id))
                .set(dsl::balance_minor.eq(minor_units))
                .execute(c)
                .map_err(anyhow::Error::from)
        })
        .await
        .expect("balance set");
    }

    /// Every charge in the ledger.
    pub async fn ledger(&self) -> Vec<Charge> {
        db::run(&self.pool, |c| {
            db::charges::all(c).map_err(anyhow::Error::from)
        })
        .await
        .expect("ledger read")
    }
}

/// A TCP forwarder whose link can be cut and restored: a database or service "outage"
/// without touching the server behind it. Plain threads, so it needs no runtime.
pub struct TcpProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    pub fn start(target: SocketAddr) -> io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (accept_up, accept_open) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !accept_up.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                if let Ok(mut open) = accept_open.lock() {
                    open.extend(client.try_clone().ok());
                    open.extend(server.try_clone().ok());
                }
                std::thread::spawn(move || pipe(client, server));
                std::thread::spawn(move || pipe(server2, client2));
            }
        });
        Ok(TcpProxy { addr, up, open })
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut open) = self.open.lock() {
            for stream in open.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

/// Where `host:port` sits in a PostgreSQL URL.
fn host_span(url: &str) -> (usize, usize) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    let start = url[after_scheme..end]
        .rfind('@')
        .map_or(after_scheme, |i| after_scheme + i + 1);
    (start, end)
}

/// The same PostgreSQL URL with its host and port replaced by `addr`.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let (start, end) = host_span(url);
    format!("{}{addr}{}", &url[..start], &url[end..])
}

/// The server address of a PostgreSQL URL (port 5432 when none is given).
pub fn server_addr(url: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    let (start, end) = host_span(url);
    let host = &url[start..end];
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    host.to_socket_addrs().ok()?.next()
}

/// What a chart may pass to its service: for every `ENV: {{ .Values.config.<path> … }}` line
/// of `<chart>/templates/configmap.yaml`, the values its `values.schema.json` allows at the
/// edges (an integer's or number's minimum and maximum, every enum value), as
/// `(ENV, value)`. A service test feeds each to its config parser, which must accept it.
pub fn chart_config_edges(chart_dir: &std::path::Path) -> Vec<(String, String)> {
    let read = |file: &str| {
        std::fs::read_to_string(chart_dir.join(file))
            .unwrap_or_else(|e| panic!("{}/{file}: {e}", chart_dir.display()))
    };
    let schema: serde_json::Value =
        serde_json::from_str(&read("values.schema.json")).expect("values.schema.json is JSON");
    let mut edges = Vec::new();
    for line in read("templates/configmap.yaml").lines() {
        let Some((env, rest)) = line.trim().split_once(": {{ .Values.config.") else {
            continue;
        };
        let path = rest.split_whitespace().next().unwrap_or_default();
        let property = path
            .split('.')
            .fold(&schema["properties"]["config"], |node, key| {
                &node["properties"][key]
            });
        assert!(
            property.is_object(),
            "{env}: config.{path} is not in values.schema.json"
        );
        let mut values: Vec<String> = Vec::new();
        if let Some(choices) = property["enum"].as_array() {
            values.extend(choices.iter().filter_map(|v| v.as_str().map(str::to_owned)));
        }
        if matches!(property["type"].as_str(), Some("integer" | "number")) {
            for bound in ["minimum", "maximum"] {
                if let Some(n) = property[bound].as_number() {
                    values.push(n.to_string());
                }
            }
        }
        edges.extend(values.into_iter().map(|v| (env.to_owned(), v)));
    }
    edges
}

#[cfg(test)]
mod tests {
    #[test]
    fn via_replaces_host_and_port_only() {
        let addr = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(
            super::via("postgres://u@h:5432/db", addr),
            "postgres://u@127.0.0.1:9/db"
        );
        assert_eq!(
            super::via("postgres://h/db?x=1", addr),
            "postgres://127.0.0.1:9/db?x=1"
        );
    }

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
