use api_contract::{Currency, Money};
use payment_provider::config::Config;
use payment_provider::db::DbUrl;
use serde_json::{Value, json};
pub use test_support::Backend;
use test_support::TestProvider;

pub struct TestApp {
    pub provider: TestProvider,
    pub client: reqwest::Client,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
    TestApp {
        provider: TestProvider::spawn(backend, configure).await,
        client: reqwest::Client::new(),
    }
}

pub fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::Eur).expect("valid amount")
}

pub fn charge_body(invoice: &str, customer: &str, minor: i64, currency: &str) -> Value {
    json!({
        "invoice_id": invoice,
        "customer_id": customer,
        "amount": {"minor_units": minor, "currency": currency},
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.provider.base_url)
    }

    /// An authenticated charge with the given key.
    pub async fn charge(&self, key: &str, body: &Value) -> reqwest::Response {
        self.charge_as(&self.provider.token, key, body).await
    }

    /// A charge with the given bearer token and key.
    pub async fn charge_as(&self, token: &str, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/charges"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(&self.provider.token)
            .send()
            .await
            .expect("request sent")
    }
}

/// Asserts a problem+json response with `status` and `code`, and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json", "content type");
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["code"], code, "code in {body}");
    assert_eq!(body["status"], status, "status in {body}");
    body
}

/// What `payment-provider accounts …` did: its exit status and what it printed.
pub struct OperatorRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl TestApp {
    /// Runs the real binary's `accounts <args>` against this provider's database, as an
    /// operator would, with nothing else in its environment.
    pub async fn operator(&self, args: &[&str]) -> OperatorRun {
        let url = match self.provider.database_url() {
            DbUrl::Postgres(url) | DbUrl::Sqlite(url) => url,
        };
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_payment-provider"))
                .env_clear()
                .env("DATABASE_URL", url)
                .env("LOG_FORMAT", "json")
                .arg("accounts")
                .args(&args)
                .output()
        })
        .await
        .expect("task")
        .expect("payment-provider runs");
        OperatorRun {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Asserts that `response` was replayed from the key's stored answer.
#[track_caller]
pub fn assert_replayed(response: &reqwest::Response) {
    assert_eq!(
        response
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true"),
        "a replay"
    );
}
