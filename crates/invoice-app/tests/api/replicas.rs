//! Several replicas on one database: each invoice is charged exactly once.

use std::collections::HashMap;
use std::time::Duration;

use api_contract::{ChargeRequest, Currency, CustomerId, InvoiceId};
use chrono::{TimeDelta, Utc};
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use invoice_app::db::{self, schema::invoices::dsl};
use invoice_app::startup::Application;

use crate::helpers::{Backend, create_eur_invoices, money, spawn_app, test_config};
use test_support::both_backends;

async fn three_concurrent_pay_runs_charge_each_invoice_once(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider()
        .fund("C001", money(100_000_000, Currency::Eur))
        .await;
    let pool = db::pool(&app.config.database_url, 2);
    create_eur_invoices(&pool, 300).await;

    // Two more replicas of invoice-app on the same database.
    let mut urls = vec![app.base_url.clone()];
    for _ in 0..2 {
        let replica = Application::build(test_config(&app.db, &app.provider().base_url))
            .await
            .expect("replica starts");
        urls.push(format!("http://127.0.0.1:{}", replica.port()));
        tokio::spawn(replica.run_until_stopped());
    }
    let runs: Vec<_> = urls
        .iter()
        .map(|url| {
            let (client, url) = (app.client.clone(), format!("{url}/invoices/pay"));
            tokio::spawn(async move {
                client
                    .post(url)
                    .send()
                    .await
                    .expect("sent")
                    .json::<serde_json::Value>()
                    .await
            })
        })
        .collect();
    let mut paid_by_runs = 0;
    for run in runs {
        let report = run.await.expect("task").expect("report");
        paid_by_runs += report["summary"]["paid"]
            .as_u64()
            .unwrap_or_else(|| panic!("{report}"));
    }

    assert_eq!(
        paid_by_runs, 300,
        "the runs split the invoices between them"
    );
    let ledger = app.provider().ledger().await;
    let mut per_invoice: HashMap<&str, usize> = HashMap::new();
    for charge in &ledger {
        *per_invoice.entry(charge.invoice_id.as_str()).or_default() += 1;
    }
    assert_eq!(per_invoice.len(), 300);
    assert!(
        per_invoice.values().all(|n| *n == 1),
        "an invoice was charged twice"
    );
    let expected: i64 = (0..300).map(|i| 100 + i).sum();
    assert_eq!(
        app.provider().balance("C001").await,
        Some(100_000_000 - expected)
    );
    assert_eq!(app.invoices("paid").await.len(), 300);
    // The runs' records agree: each payment counted by exactly one run.
    assert_eq!(crate::records::run_totals(&pool).await, (300, 0));
}

async fn expired_claim_of_a_crashed_worker_is_taken_over_without_a_second_charge(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider()
        .fund("C001", money(10_000, Currency::Eur))
        .await;
    let invoice = app.create_invoice("C001", 1234, "EUR").await;
    let id = invoice["id"].as_str().expect("id").to_owned();

    // A worker claimed it, charged it, and died before recording the payment.
    let key = invoice_app::domain::idempotency_key_for(&id, 0).expect("key");
    let charged = app
        .client
        .post(format!("{}/v1/charges", app.provider().base_url))
        .bearer_auth(&app.provider().token)
        .header("Idempotency-Key", key.as_str())
        .json(&ChargeRequest {
            invoice_id: InvoiceId::parse(id.clone()).expect("id"),
            customer_id: CustomerId::parse("C001").expect("id"),
            amount: money(1234, Currency::Eur),
        })
        .send()
        .await
        .expect("sent");
    assert_eq!(charged.status().as_u16(), 201);
    let pool = db::pool(&app.config.database_url, 1);
    let crashed = id.clone();
    db::run(&pool, move |c| {
        diesel::update(dsl::invoices.find(crashed))
            .set((
                dsl::status.eq("processing"),
                dsl::claimed_by.eq("dead-worker"),
                dsl::lease_until.eq(Utc::now().naive_utc() - TimeDelta::seconds(1)),
            ))
            .execute(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("claim planted");

    let report = app.pay().await;

    assert_eq!(report["summary"]["paid"], 1, "{report}");
    let ledger = app.provider().ledger().await;
    assert_eq!(ledger.len(), 1, "the replay must not charge again");
    let (_, stored) = app.get_json(&format!("/invoices/{id}")).await;
    assert_eq!(stored["status"], "paid");
    assert_eq!(stored["charge_id"], ledger[0].id.as_str());
    assert_eq!(app.provider().balance("C001").await, Some(10_000 - 1234));
}

/// A claim another worker holds is not taken while its lease lasts; the run waits for it
/// rather than complete with it untried, and takes it once the lease has lapsed (its holder
/// died: a live one would have settled it).
async fn live_claim_of_another_worker_is_left_alone(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider()
        .fund("C001", money(10_000, Currency::Eur))
        .await;
    let invoice = app.create_invoice("C001", 100, "EUR").await;
    let id = invoice["id"].as_str().expect("id").to_owned();
    let pool = db::pool(&app.config.database_url, 1);
    let held = id.clone();
    db::run(&pool, move |c| {
        diesel::update(dsl::invoices.find(held))
            .set((
                dsl::status.eq("processing"),
                dsl::claimed_by.eq("busy-worker"),
                dsl::lease_until.eq(Utc::now().naive_utc() + TimeDelta::seconds(3)),
            ))
            .execute(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("claim planted");

    let started = std::time::Instant::now();
    let paying = {
        let (client, base) = (app.client.clone(), app.base_url.clone());
        tokio::spawn(async move { client.post(format!("{base}/invoices/pay")).send().await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        app.provider().ledger().await.is_empty(),
        "charged within another worker's lease"
    );
    let report: serde_json::Value = paying
        .await
        .expect("task")
        .expect("answered")
        .json()
        .await
        .expect("report");
    assert!(started.elapsed() >= Duration::from_secs(3), "{report}");
    assert_eq!(report["summary"]["paid"], 1, "{report}");
    assert_eq!(app.provider().ledger().await.len(), 1);
}

both_backends!(
    three_concurrent_pay_runs_charge_each_invoice_once,
    expired_claim_of_a_crashed_worker_is_taken_over_without_a_second_charge,
    live_claim_of_another_worker_is_left_alone,
);
