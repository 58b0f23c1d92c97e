use std::time::Duration;

use api_contract::{Currency, CustomerId, Money};
use invoice_app::config::{Config, Seed};
use invoice_app::domain::NewInvoice;
use invoice_app::startup::Application;
use secrecy::SecretString;
use serde_json::{Value, json};
pub use test_support::Backend;
use test_support::{DbUrl, Service, TEST_TOKEN, TestDb, TestProvider};

pub struct TestApp {
    pub base_url: String,
    /// Where `/metrics` is served (not on the API port).
    pub metrics_url: String,
    /// Sends the development key unless a request sets its own `Authorization`.
    pub client: reqwest::Client,
    /// `None` where the test charges nothing: see [`Builder::provider`].
    provider: Option<TestProvider>,
    pub db: TestDb,
    pub config: Config,
}

type ConfigureProvider<'a> = Box<dyn FnOnce(&mut payment_provider::config::Config) + 'a>;

/// How a test's invoice-app starts: on which backend, with or without a real provider, and
/// with which settings.
pub struct Builder<'a> {
    backend: Backend,
    provider: Option<ConfigureProvider<'a>>,
    configure: Box<dyn FnOnce(&mut Config) + 'a>,
}

impl<'a> Builder<'a> {
    /// A real provider on a database of its own, `configure` adjusting its settings; without
    /// one, the app's provider URL is a port where nothing listens.
    pub fn provider(
        mut self,
        configure: impl FnOnce(&mut payment_provider::config::Config) + 'a,
    ) -> Self {
        self.provider = Some(Box::new(configure));
        self
    }

    pub fn configure(mut self, configure: impl FnOnce(&mut Config) + 'a) -> Self {
        self.configure = Box::new(configure);
        self
    }

    pub async fn spawn(self) -> TestApp {
        // The provider used to do this for every test; a test without one logs too.
        test_support::init_test_log();
        let provider = match self.provider {
            Some(configure) => Some(TestProvider::spawn(self.backend, configure).await),
            None => None,
        };
        let provider_url = provider
            .as_ref()
            .map_or_else(unused_url, |p| p.base_url.clone());
        let db = TestDb::create(self.backend, Service::InvoiceApp);
        let mut config = test_config(&db, &provider_url);
        (self.configure)(&mut config);
        let app = Application::build(config.clone())
            .await
            .expect("invoice-app starts");
        let base_url = format!("http://127.0.0.1:{}", app.port());
        let metrics_url = format!("http://127.0.0.1:{}/metrics", app.metrics_port());
        tokio::spawn(app.run_until_stopped());
        TestApp {
            base_url,
            metrics_url,
            client: api_client(),
            provider,
            db,
            config,
        }
    }
}

/// A loopback port just freed, so nothing listens there: a charge would be refused at once.
fn unused_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("http://127.0.0.1:{port}")
}

/// A client that authenticates with the development key (accepted by an invoice-app on
/// loopback with no issuer and no API keys) unless a request sets its own `Authorization`.
pub fn api_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_static("Bearer dev-only-insecure-api-key"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client builds")
}

/// A config for a test invoice-app: short retry budget, no schedule, no seed, both ports
/// free ones on loopback.
pub fn test_config(db: &TestDb, provider_url: &str) -> Config {
    let mut config = Config::from_lookup(&|_| None).expect("default configuration is valid");
    config.listen_addr = ([127, 0, 0, 1], 0).into();
    config.metrics_addr = ([127, 0, 0, 1], 0).into();
    config.database_url = db_url(db);
    config.pool_size = config.database_url.default_pool_size();
    config.seed = Seed::None;
    config.provider_url = provider_url.to_owned();
    config.provider_token = Some(SecretString::from(TEST_TOKEN));
    config.pay_schedule = None;
    config.daily_schedule = None;
    config.retry_max_elapsed = Duration::from_secs(3);
    config.charge_timeout = Duration::from_secs(2);
    config.claim_lease = Duration::from_secs(30);
    config
}

/// invoice-app's URL of a test database.
pub fn db_url(db: &TestDb) -> invoice_app::db::DbUrl {
    match &db.url {
        DbUrl::Postgres(url) => invoice_app::db::DbUrl::Postgres(url.clone()),
        DbUrl::Sqlite(path) => invoice_app::db::DbUrl::Sqlite(path.clone()),
    }
}

/// A provider and an invoice-app wired to it.
pub async fn spawn_app(backend: Backend) -> TestApp {
    TestApp::builder(backend).provider(|_| {}).spawn().await
}

pub async fn spawn_app_with(
    backend: Backend,
    configure_provider: impl FnOnce(&mut payment_provider::config::Config),
    configure_app: impl FnOnce(&mut Config),
) -> TestApp {
    TestApp::builder(backend)
        .provider(configure_provider)
        .configure(configure_app)
        .spawn()
        .await
}

/// A second invoice-app on `app`'s database and provider, serving until its handle stops
/// it (as SIGTERM does): the handle, its base URL, and the serving task.
pub async fn second_instance(
    app: &TestApp,
) -> (
    invoice_app::startup::StopHandle,
    String,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let instance = Application::build(test_config(&app.db, &app.provider().base_url))
        .await
        .expect("starts");
    let (handle, base) = (
        instance.handle(),
        format!("http://127.0.0.1:{}", instance.port()),
    );
    (handle, base, tokio::spawn(instance.run_until_stopped()))
}

/// Writes `count` pending invoices of 100, 101, … EUR cents for C001 straight into the
/// database (much faster than through the API, for runs of thousands).
pub async fn create_eur_invoices(pool: &invoice_app::db::DbPool, count: i64) {
    let new: Vec<NewInvoice> = (0..count)
        .map(|i| {
            NewInvoice::parse(
                CustomerId::parse("C001").expect("id"),
                money(100 + i, Currency::Eur),
                None,
            )
            .expect("valid")
        })
        .collect();
    invoice_app::invoices::create(pool, new)
        .await
        .expect("invoices created");
}

pub fn money(minor: i64, currency: Currency) -> Money {
    Money::new(minor, currency).expect("valid amount")
}

impl TestApp {
    /// An invoice-app without a provider until [`Builder::provider`] asks for one.
    pub fn builder<'a>(backend: Backend) -> Builder<'a> {
        Builder {
            backend,
            provider: None,
            configure: Box::new(|_| {}),
        }
    }

    /// The provider this app charges.
    pub fn provider(&self) -> &TestProvider {
        self.provider
            .as_ref()
            .expect("a provider was started (TestApp::builder(…).provider(…))")
    }

    pub fn provider_mut(&mut self) -> &mut TestProvider {
        self.provider
            .as_mut()
            .expect("a provider was started (TestApp::builder(…).provider(…))")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Creates an invoice through the API and returns it.
    pub async fn create_invoice(&self, customer: &str, minor: i64, currency: &str) -> Value {
        let response = self
            .client
            .post(self.url("/invoices"))
            .json(&json!({"customer_id": customer, "amount": {"minor_units": minor, "currency": currency}}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), 201, "create invoice");
        response.json().await.expect("invoice")
    }

    /// Funds customer C001 with `funded` EUR cents and creates `count` pending invoices of
    /// 100, 101, … cents for it; returns their total.
    pub async fn eur_invoices(&self, funded: i64, count: i64) -> i64 {
        self.provider()
            .fund("C001", money(funded, Currency::Eur))
            .await;
        for i in 0..count {
            self.create_invoice("C001", 100 + i, "EUR").await;
        }
        (0..count).map(|i| 100 + i).sum()
    }

    /// The value of one Prometheus sample line of `/metrics` (on the metrics port), e.g.
    /// `name{label="x"}`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let text = reqwest::Client::new()
            .get(&self.metrics_url)
            .send()
            .await
            .expect("sent")
            .text()
            .await
            .expect("text");
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
    }

    pub async fn pay(&self) -> Value {
        let response = self
            .client
            .post(self.url("/invoices/pay"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), 200, "pay");
        response.json().await.expect("report")
    }

    /// Starts a background pay run and returns its Location.
    pub async fn start_pay_run(&self) -> String {
        let started = self
            .client
            .post(self.url("/pay-runs"))
            .send()
            .await
            .expect("sent");
        assert_eq!(started.status().as_u16(), 202);
        started
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("Location header")
            .to_owned()
    }

    /// Polls a pay run until it is no longer running (at most 30 s).
    pub async fn wait_for_run(&self, location: &str) -> Value {
        for _ in 0..600 {
            let (_, run) = self.get_json(location).await;
            if run["status"] != "running" {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pay run {location} did not finish");
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Every invoice with `status`, across pages.
    pub async fn invoices(&self, status: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/invoices?status={status}&limit=50");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (code, page) = self.get_json(&path).await;
            assert_eq!(code, 200);
            all.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return all,
            }
        }
    }
}

/// `invoice-app pay`, the CronJob's command, on `app`'s database and provider.
pub fn pay_command(app: &TestApp) -> std::process::Command {
    let database_url = match &app.db.url {
        DbUrl::Postgres(url) => url.clone(),
        DbUrl::Sqlite(path) => format!("sqlite://{path}"),
    };
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_invoice-app"));
    command
        .arg("pay")
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("PAYMENT_PROVIDER_URL", &app.provider().base_url)
        .env("PAYMENT_PROVIDER_TOKEN", test_support::TEST_TOKEN)
        .env("SEED", "none")
        .env("LOG_FORMAT", "json");
    command
}

/// Asserts a problem+json response with `status` and `code`.
pub async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["code"], code, "code in {body}");
    body
}

/// An invoice-app process (the real binary) on a free loopback port, presenting `token` to
/// the provider, with a short lease and retry budget; `extra` adds or overrides settings.
/// Its output goes to `log`. The child and its base URL.
pub fn start_binary(
    db_url: &str,
    provider_url: &str,
    token: &str,
    log: &std::path::Path,
    extra: &[(&str, &str)],
) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_invoice-app"))
        .env_clear()
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", db_url)
        .env("PAYMENT_PROVIDER_URL", provider_url)
        .env("PAYMENT_PROVIDER_TOKEN", token)
        .env("SEED", "none")
        .env("PAY_SCHEDULE", "off")
        .env("CLAIM_LEASE_SECS", "10")
        .env("RETRY_MAX_ELAPSED_SECS", "3")
        .env("CHARGE_TIMEOUT_MS", "1000")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .envs(extra.iter().copied())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("invoice-app starts");
    (child, format!("http://127.0.0.1:{port}"))
}

/// Waits up to 10 s for `/readyz` to answer 200.
pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("invoice-app at {base} did not become ready");
}
