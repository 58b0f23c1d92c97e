//! One trace spans both services: invoice-app's charge call carries W3C trace context, and
//! payment-provider's request span continues it. Its own test binary, because it installs
//! the process-wide tracing subscriber.

use api_contract::{Currency, Money};
use invoice_app::config::{Config, Seed};
use invoice_app::startup::Application;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::InMemorySpanExporter;
use secrecy::SecretString;
use test_support::{Backend, DbUrl, Service, TEST_TOKEN, TestDb, TestProvider};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_invoice_app_and_payment_provider() {
    let exporter = InMemorySpanExporter::default();
    let _telemetry = invoice_app::telemetry::init_with_exporter("invoice-app", exporter.clone())
        .expect("subscriber installed");

    let provider = TestProvider::spawn(Backend::Sqlite, |_| {}).await;
    provider
        .fund("C001", Money::new(10_000, Currency::Eur).expect("amount"))
        .await;
    let db = TestDb::create(Backend::Sqlite, Service::InvoiceApp);
    let mut config = Config::from_lookup(&|_| None).expect("defaults");
    config.listen_addr = ([127, 0, 0, 1], 0).into();
    config.metrics_addr = ([127, 0, 0, 1], 0).into();
    config.database_url = invoice_app::db::DbUrl::Sqlite(match &db.url {
        DbUrl::Sqlite(path) => path.clone(),
        DbUrl::Postgres(_) => unreachable!("SQLite"),
    });
    config.seed = Seed::None;
    config.pay_schedule = None;
    config.provider_url = provider.base_url.clone();
    config.provider_token = Some(SecretString::from(TEST_TOKEN));
    let app = Application::build(config)
        .await
        .expect("invoice-app starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());

    let client = reqwest::Client::new();
    let created = client
        .post(format!("{base}/invoices"))
        .bearer_auth(invoice_app::auth::DEV_API_KEY)
        .json(&serde_json::json!({"customer_id": "C001", "amount": {"minor_units": 250, "currency": "EUR"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status().as_u16(), 201);
    let paid: serde_json::Value = client
        .post(format!("{base}/invoices/pay"))
        .bearer_auth(invoice_app::auth::DEV_API_KEY)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("report");
    assert_eq!(paid["summary"]["paid"], 1, "{paid}");

    let spans = exporter.get_finished_spans().expect("spans");
    let charge = spans
        .iter()
        .find(|s| s.name == "charge")
        .expect("invoice-app's charge span");
    let served = spans
        .iter()
        .find(|s| s.name == "POST /v1/charges")
        .expect("payment-provider's request span");
    assert_ne!(charge.span_context.trace_id(), TraceId::INVALID);
    assert_eq!(
        served.span_context.trace_id(),
        charge.span_context.trace_id(),
        "payment-provider continued invoice-app's trace"
    );
    assert_eq!(
        served.parent_span_id,
        charge.span_context.span_id(),
        "the charge call is its parent"
    );
    assert!(served.parent_span_is_remote, "the parent came over HTTP");
    assert_ne!(served.parent_span_id, SpanId::INVALID);
    let pay_run = spans
        .iter()
        .find(|s| s.name == "pay_run")
        .expect("pay_run span");
    assert_eq!(
        pay_run.span_context.trace_id(),
        charge.span_context.trace_id()
    );
}
