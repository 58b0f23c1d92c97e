//! Things going wrong under a pay run: the provider dies and comes back, answers later than
//! the client waits, our own database goes away. Nothing is lost or charged twice.

use std::collections::HashMap;
use std::time::Duration;

use invoice_app::startup::Application;
use test_support::{DbUrl, Service, TcpProxy, TestDb, postgres_only, server_addr, via};

use crate::helpers::{
    Backend, TestApp, api_client, assert_problem, second_instance, spawn_app_with, test_config,
};
use test_support::both_backends;

/// Every invoice of `app` paid, each charged exactly once, the balance exact.
async fn assert_each_paid_once(app: &TestApp, count: usize, funded: i64, total: i64) {
    assert_eq!(app.invoices("paid").await.len(), count, "all paid");
    let mut per_invoice: HashMap<String, usize> = HashMap::new();
    for charge in app.provider().ledger().await {
        *per_invoice.entry(charge.invoice_id).or_default() += 1;
    }
    assert_eq!(per_invoice.len(), count);
    assert!(
        per_invoice.values().all(|n| *n == 1),
        "an invoice was charged twice"
    );
    assert_eq!(app.provider().balance("C001").await, Some(funded - total));
}

async fn provider_killed_and_restarted_mid_run(backend: Backend) {
    let mut app = spawn_app_with(
        backend,
        |p| {
            p.faults.latency = Duration::from_millis(40);
            // Keys cut off mid-flight by the kill are taken over quickly.
            p.stale_claim_after = Duration::from_secs(2);
        },
        |a| a.retry_max_elapsed = Duration::from_secs(20),
    )
    .await;
    let total = app.eur_invoices(10_000_000, 120).await;
    let location = app.start_pay_run().await;

    tokio::time::sleep(Duration::from_millis(150)).await;
    app.provider().kill().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    app.provider_mut().restart().await;

    let run = app.wait_for_run(&location).await;
    assert_eq!(run["status"], "completed", "{run}");
    // Whatever the run could not finish, the next one does.
    app.pay().await;
    assert_each_paid_once(&app, 120, 10_000_000, total).await;
}

async fn answers_slower_than_the_client_waits_are_retried_with_the_same_key(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |p| p.faults.latency = Duration::from_millis(900),
        |a| {
            a.charge_timeout = Duration::from_millis(300);
            a.retry_max_elapsed = Duration::from_secs(15);
        },
    )
    .await;
    let total = app.eur_invoices(1_000_000, 4).await;

    let report = app.pay().await;

    assert_eq!(report["summary"]["paid"], 4, "{report}");
    assert_each_paid_once(&app, 4, 1_000_000, total).await;
    let unknown = app
        .metric(r#"invoice_app_charge_attempts_total{outcome="unknown"}"#)
        .await;
    assert!(
        unknown.is_some_and(|n| n > 0.0),
        "timeouts must be recorded as unknown outcomes"
    );
}

async fn database_outage_is_reported_and_recovered_from() {
    let provider_app = spawn_app_with(Backend::Postgres, |_| {}, |_| {}).await;
    // A second invoice-app whose database connection runs through a proxy we can cut.
    let db = TestDb::create(Backend::Postgres, Service::InvoiceApp);
    let DbUrl::Postgres(url) = &db.url else {
        unreachable!("a PostgreSQL database")
    };
    let proxy = TcpProxy::start(server_addr(url).expect("PostgreSQL address")).expect("proxy");
    let mut config = test_config(&db, &provider_app.provider().base_url);
    config.database_url = invoice_app::db::DbUrl::Postgres(via(url, proxy.addr));
    let app = Application::build(config).await.expect("starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let metrics_url = format!("http://127.0.0.1:{}/metrics", app.metrics_port());
    tokio::spawn(app.run_until_stopped());
    let client = api_client();
    let get = |path: &str| client.get(format!("{base}{path}")).send();

    assert_eq!(get("/readyz").await.expect("sent").status().as_u16(), 200);
    proxy.cut();

    assert_problem(
        get("/readyz").await.expect("sent"),
        503,
        "service_unavailable",
    )
    .await;
    assert_problem(
        get("/invoices").await.expect("sent"),
        503,
        "service_unavailable",
    )
    .await;
    let create = client
        .post(format!("{base}/invoices"))
        .json(&serde_json::json!({"customer_id": "C001", "amount": {"minor_units": 100, "currency": "EUR"}}))
        .send()
        .await
        .expect("sent");
    assert_problem(create, 503, "service_unavailable").await;
    let pay = client
        .post(format!("{base}/invoices/pay"))
        .send()
        .await
        .expect("sent");
    assert_problem(pay, 503, "service_unavailable").await;
    // Liveness is not readiness: the process itself is fine.
    assert_eq!(get("/healthz").await.expect("sent").status().as_u16(), 200);
    // The metrics still answer, and say what is wrong (the alert reads this line).
    let database_up = || async {
        let text = client.get(&metrics_url).send().await.expect("sent");
        assert_eq!(text.status().as_u16(), 200);
        let text = text.text().await.expect("text");
        text.lines().find_map(|l| {
            l.strip_prefix("invoice_app_database_up ")
                .map(str::to_owned)
        })
    };
    assert_eq!(database_up().await.as_deref(), Some("0"));

    proxy.restore();
    let mut ready = false;
    for _ in 0..50 {
        if get("/readyz").await.expect("sent").status().as_u16() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ready, "invoice-app did not recover by itself");
    assert_eq!(get("/invoices").await.expect("sent").status().as_u16(), 200);
    assert_eq!(database_up().await.as_deref(), Some("1"));
}

postgres_only!(
    postgres_database_outage_is_reported_and_recovered_from => database_outage_is_reported_and_recovered_from
);

async fn graceful_shutdown_hands_back_every_claim(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |p| p.faults.latency = Duration::from_millis(100),
        |_| {},
    )
    .await;
    let total = app.eur_invoices(10_000_000, 200).await;
    // A second instance on the same database, stopped (SIGTERM-like) in the middle of a run.
    let (handle, base, serving) = second_instance(&app).await;
    let started = app
        .client
        .post(format!("{base}/pay-runs"))
        .send()
        .await
        .expect("sent");
    assert_eq!(started.status().as_u16(), 202);
    let location = started
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a Location")
        .to_owned();
    tokio::time::sleep(Duration::from_millis(400)).await;

    handle.stop(true).await;
    serving.await.expect("task").expect("stopped cleanly");

    // Nothing is left claimed by the stopped instance: each invoice is paid or pending again.
    let processing = app.invoices("processing").await;
    assert!(
        processing.is_empty(),
        "claims left behind: {}",
        processing.len()
    );
    let paid = app.invoices("paid").await.len();
    assert!(
        paid > 0 && paid < 200,
        "the stop did not land mid-run (paid {paid})"
    );
    assert_eq!(
        app.provider().ledger().await.len(),
        paid,
        "every charge is recorded as paid"
    );
    // The stopped run says so, with what it did: not `completed` with invoices untried.
    let (_, run) = app.get_json(&location).await;
    assert_ne!(run["status"], "completed", "{run}");
    assert_ne!(run["status"], "running", "{run}");
    assert_eq!(run["summary"]["paid"], paid, "{run}");
    // The remaining instance finishes the job.
    app.pay().await;
    assert_each_paid_once(&app, 200, 10_000_000, total).await;
}

both_backends!(
    provider_killed_and_restarted_mid_run,
    answers_slower_than_the_client_waits_are_retried_with_the_same_key,
    graceful_shutdown_hands_back_every_claim,
);
