//! Paying invoices against the real payment-provider: successes, declines, retries, outages.

use std::collections::HashMap;
use std::time::Duration;

use api_contract::Currency;
use payment_provider::domain::AccountAction;

use crate::helpers::{Backend, assert_problem, money, spawn_app, spawn_app_with};
use test_support::both_backends;

async fn every_pending_invoice_is_paid_once(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider()
        .fund("C001", money(1_000_000, Currency::Eur))
        .await;
    app.provider()
        .fund("C003", money(1_000_000, Currency::Dkk))
        .await;
    let mut expected = Vec::new();
    for i in 0..12 {
        let (customer, currency) = if i % 2 == 0 {
            ("C001", "EUR")
        } else {
            ("C003", "DKK")
        };
        expected.push(
            app.create_invoice(customer, 100 + i, currency).await["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }

    let report = app.pay().await;

    assert_eq!(report["summary"]["paid"], 12, "{report}");
    assert_eq!(report["summary"]["failed"], 0);
    let paid = app.invoices("paid").await;
    assert_eq!(paid.len(), 12);
    assert!(app.invoices("pending").await.is_empty());
    // The ledger holds exactly one charge per invoice, for its amount.
    let ledger = app.provider().ledger().await;
    assert_eq!(ledger.len(), 12);
    let by_invoice: HashMap<_, _> = ledger.iter().map(|c| (c.invoice_id.clone(), c)).collect();
    for invoice in &paid {
        let charge = by_invoice[invoice["id"].as_str().expect("id")];
        assert_eq!(invoice["charge_id"], charge.id.as_str());
        assert_eq!(invoice["amount"]["minor_units"], charge.amount_minor);
    }
    let eur_total: i64 = (0..12).step_by(2).map(|i| 100 + i).sum();
    assert_eq!(
        app.provider().balance("C001").await,
        Some(1_000_000 - eur_total)
    );

    // A second run finds nothing to do and charges nothing more.
    let again = app.pay().await;
    assert_eq!(again["summary"]["paid"], 0);
    assert_eq!(app.provider().ledger().await.len(), 12);
}

async fn declines_are_recorded_as_failed_with_reason(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider()
        .fund("C001", money(1000, Currency::Eur))
        .await;
    app.provider()
        .fund("C003", money(1000, Currency::Dkk))
        .await;
    // Funded enough, so only their status stands in the way.
    for (customer, action) in [
        ("C004", AccountAction::Hold),
        ("C005", AccountAction::Close),
    ] {
        app.provider()
            .fund(customer, money(100_000, Currency::Eur))
            .await;
        app.provider().account_action(customer, action).await;
    }
    let broke = app.create_invoice("C001", 5000, "EUR").await;
    let unknown = app.create_invoice("NOBODY", 100, "EUR").await;
    let mismatch = app.create_invoice("C003", 100, "EUR").await;
    let held = app.create_invoice("C004", 100, "EUR").await;
    let closed = app.create_invoice("C005", 100, "EUR").await;
    let fine = app.create_invoice("C001", 100, "EUR").await;

    let report = app.pay().await;

    assert_eq!(report["summary"]["paid"], 1, "{report}");
    // Hard declines fail the invoice; soft ones make it past due, to be tried again.
    assert_eq!(report["summary"]["failed"], 3);
    assert_eq!(report["summary"]["retry_later"], 2);
    for (invoice, reason, status) in [
        (&broke, "insufficient_funds", "past_due"),
        (&unknown, "customer_not_found", "failed"),
        (&mismatch, "currency_mismatch", "failed"),
        (&held, "try_again_later", "past_due"),
        (&closed, "account_closed", "failed"),
    ] {
        let (_, stored) = app
            .get_json(&format!(
                "/invoices/{}",
                invoice["id"].as_str().expect("id")
            ))
            .await;
        assert_eq!(stored["status"], status, "{stored}");
        assert_eq!(stored["failure_reason"], reason);
        assert_eq!(stored["attempt_count"], u8::from(status == "past_due"));
        // A decline, never a case for a person.
        assert!(stored["attention"].is_null(), "{stored}");
    }
    let (_, paid) = app
        .get_json(&format!("/invoices/{}", fine["id"].as_str().expect("id")))
        .await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(app.provider().ledger().await.len(), 1);
    // Failed invoices are final, and past-due ones not due for days: another run leaves
    // them alone.
    assert_eq!(
        app.pay().await["summary"],
        serde_json::json!({"paid": 0, "failed": 0, "retry_later": 0})
    );
}

async fn injected_unavailability_is_retried_until_paid(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |p| {
            p.faults.unavailable_rate = 0.5;
            p.faults.retry_after_secs = 0;
        },
        // Half the calls fail at random, so an invoice's chance of using up its budget is
        // 0.5^attempts. 20 s (about 9 attempts) left one of 20 invoices unpaid in ~4 % of
        // runs; 120 s allows at least 20 attempts even with the longest jitter: < 1e-4.
        |a| a.retry_max_elapsed = Duration::from_secs(120),
    )
    .await;
    let total = app.eur_invoices(1_000_000, 20).await;

    let report = app.pay().await;

    assert_eq!(report["summary"]["paid"], 20, "{report}");
    assert_eq!(app.provider().ledger().await.len(), 20);
    assert_eq!(
        app.provider().balance("C001").await,
        Some(1_000_000 - total)
    );
    // The retries are on record: more attempts than invoices, each with an outcome.
    let retried = app
        .metric(r#"invoice_app_charge_attempts_total{outcome="retryable"}"#)
        .await;
    assert!(
        retried.is_some_and(|n| n > 0.0),
        "no retried attempt recorded"
    );
}

async fn provider_down_leaves_invoices_pending_and_says_so(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |_| {},
        |a| a.retry_max_elapsed = Duration::from_secs(1),
    )
    .await;
    app.eur_invoices(1_000_000, 3).await;
    app.provider().handle.stop(false).await;

    let report = app.pay().await;

    assert_eq!(report["summary"]["paid"], 0, "{report}");
    assert_eq!(report["summary"]["retry_later"], 3);
    let reasons: Vec<&str> = report["retry_later"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert!(
        reasons.iter().all(|r| r.contains("unreachable")),
        "{reasons:?}"
    );
    assert_eq!(app.invoices("pending").await.len(), 3);
    // invoice-app itself stays ready: its readiness is its own database only.
    let (ready, _) = app.get_json("/readyz").await;
    assert_eq!(ready, 200);
    assert!(app.provider().ledger().await.is_empty());
    // What the provider-unreachable and retries-exhausted alerts read: every attempt went
    // unanswered, each invoice went back to pending once, and the run itself completed.
    let attempts = app
        .metric(r#"invoice_app_charge_attempts_total{outcome="retryable"}"#)
        .await;
    let unanswered = app
        .metric("invoice_app_charge_calls_unanswered_total")
        .await;
    assert!(attempts.is_some_and(|n| n >= 3.0), "{attempts:?}");
    assert_eq!(unanswered, attempts);
    // The same, read from the database (what the alerts use: the CronJob's runs too).
    for (sample, want) in [
        (r#"invoice_app_pay_run_invoices{result="retry_later"}"#, 3.0),
        (r#"invoice_app_pay_runs{status="completed"}"#, 1.0),
        (
            r#"invoice_app_recent_charge_attempts{outcome="retryable"}"#,
            attempts.unwrap_or(0.0),
        ),
        (
            "invoice_app_recent_charge_attempts_unanswered",
            attempts.unwrap_or(0.0),
        ),
    ] {
        assert_eq!(app.metric(sample).await, Some(want), "{sample}");
    }
}

async fn every_attempt_is_recorded(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider()
        .fund("C001", money(1000, Currency::Eur))
        .await;
    let invoice = app.create_invoice("C001", 100, "EUR").await;
    app.pay().await;
    let id = invoice["id"].as_str().expect("id").to_owned();
    let pool = invoice_app::db::pool(&app.config.database_url, 1);
    let attempts = invoice_app::db::run(&pool, move |c| {
        invoice_app::db::attempts::for_invoice(c, &id).map_err(anyhow::Error::from)
    })
    .await
    .expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome.as_str(), "succeeded");
    assert_eq!(attempts[0].http_status, Some(201));
    assert!(attempts[0].finished_at.is_some());
    assert_eq!(
        attempts[0].idempotency_key,
        format!("invoice-{}", invoice["id"].as_str().expect("id"))
    );
}

async fn background_pay_run_can_be_followed(backend: Backend) {
    let app = spawn_app(backend).await;
    app.eur_invoices(1_000_000, 5).await;
    let location = app.start_pay_run().await;
    let run = app.wait_for_run(&location).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["summary"]["paid"], 5);
    assert_eq!(app.invoices("paid").await.len(), 5);
}

async fn pay_runs_beyond_the_limit_are_refused_until_one_ends(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |p| p.faults.latency = Duration::from_millis(2000),
        |c| c.pay_max_runs = 1,
    )
    .await;
    app.eur_invoices(1_000_000, 2).await;
    let location = app.start_pay_run().await;
    for path in ["/pay-runs", "/invoices/pay"] {
        let refused = app.client.post(app.url(path)).send().await.expect("sent");
        assert_eq!(
            refused
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("5"),
            "{path}"
        );
        assert_problem(refused, 429, "rate_limited").await;
    }
    let run = app.wait_for_run(&location).await;
    assert_eq!(run["summary"]["paid"], 2, "{run}");
    // The slot is free again once the run has ended.
    app.start_pay_run().await;
}

both_backends!(
    every_pending_invoice_is_paid_once,
    declines_are_recorded_as_failed_with_reason,
    injected_unavailability_is_retried_until_paid,
    provider_down_leaves_invoices_pending_and_says_so,
    every_attempt_is_recorded,
    background_pay_run_can_be_followed,
    pay_runs_beyond_the_limit_are_refused_until_one_ends,
);
