//! The records of a pay run tell the truth: the retry budget holds whatever the provider
//! asks, a run calls an invoice once unless a retry is due, its counts are the rows it
//! changed, a key conflict is never a decline, and a failed run keeps what it settled.
//! Each test reads the databases, not only the API's answers.

use std::collections::HashMap;
use std::time::Duration;

use api_contract::Currency;
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use invoice_app::db::{self, schema};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, create_eur_invoices, money, spawn_app_with};
use test_support::{both_backends, postgres_only};

/// Calls recorded per invoice, from the audit trail.
pub async fn attempts_per_invoice(app: &TestApp) -> HashMap<String, i64> {
    use schema::payment_attempts::dsl;
    let pool = db::pool(&app.config.database_url, 1);
    let rows: Vec<(String, i64)> = db::run(&pool, |c| {
        dsl::payment_attempts
            .group_by(dsl::invoice_id)
            .select((dsl::invoice_id, diesel::dsl::count_star()))
            .load(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("attempts");
    rows.into_iter().collect()
}

/// A pay run must end: a hung one fails the test instead of the suite.
async fn pay_within(app: &TestApp, limit: Duration) -> Value {
    tokio::time::timeout(limit, app.pay())
        .await
        .expect("the pay run ended within its retry budget")
}

async fn retry_after_beyond_the_budget_ends_the_turn_at_once(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |p| {
            p.faults.unavailable_rate = 1.0;
            p.faults.retry_after_secs = 30;
        },
        |a| a.retry_max_elapsed = Duration::from_secs(3),
    )
    .await;
    app.eur_invoices(1_000_000, 3).await;

    let report = pay_within(&app, Duration::from_secs(20)).await;

    assert_eq!(report["summary"]["retry_later"], 3, "{report}");
    for item in report["retry_later"].as_array().expect("list") {
        let reason = item["reason"].as_str().expect("reason");
        assert!(reason.contains("Retry-After"), "{reason}");
    }
    let calls = attempts_per_invoice(&app).await;
    assert_eq!(calls.len(), 3);
    assert!(
        calls.values().all(|n| *n == 1),
        "a Retry-After beyond the budget must end the turn after one call: {calls:?}"
    );
    assert_eq!(app.invoices("pending").await.len(), 3);
    assert!(app.provider().ledger().await.is_empty());
}

async fn retry_after_within_the_budget_is_honoured_and_the_budget_still_ends(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |p| {
            p.faults.unavailable_rate = 1.0;
            p.faults.retry_after_secs = 1;
        },
        |a| a.retry_max_elapsed = Duration::from_secs(3),
    )
    .await;
    app.eur_invoices(1_000_000, 2).await;

    let report = pay_within(&app, Duration::from_secs(20)).await;

    assert_eq!(report["summary"]["retry_later"], 2, "{report}");
    // Calls at 0 s, then no sooner than 1 s apart, and none starting after 3 s.
    let calls = attempts_per_invoice(&app).await;
    assert!(
        calls.values().all(|n| (2..=3).contains(n)),
        "expected 2 or 3 calls each within a 3 s budget and 1 s Retry-After: {calls:?}"
    );
}

async fn queued_claims_are_called_once_per_run(backend: Backend) {
    // One call at a time, 400 ms each, and a 3 s lease: invoices claimed ahead wait in the
    // run's queue longer than the lease, and must still be called once.
    let app = spawn_app_with(
        backend,
        |p| p.faults.latency = Duration::from_millis(400),
        |a| {
            a.pay_concurrency = 1;
            a.claim_lease = Duration::from_secs(3);
            a.retry_max_elapsed = Duration::from_secs(1);
        },
    )
    .await;
    app.provider()
        .fund("C001", money(100_000_000, Currency::Eur))
        .await;
    let pool = db::pool(&app.config.database_url, 1);
    create_eur_invoices(&pool, 16).await;

    let report = pay_within(&app, Duration::from_secs(60)).await;

    assert_eq!(report["summary"]["paid"], 16, "{report}");
    let calls = attempts_per_invoice(&app).await;
    assert_eq!(calls.len(), 16);
    assert!(
        calls.values().all(|n| *n == 1),
        "an invoice waiting in the run's own queue was called twice: {calls:?}"
    );
    assert_eq!(app.provider().ledger().await.len(), 16);
    assert_eq!(run_totals(&pool).await, (16, 0));
}

/// Σ paid and Σ failed over every run, from the `pay_runs` table.
pub async fn run_totals(pool: &db::DbPool) -> (i64, i64) {
    use schema::pay_runs::dsl;
    let counts: Vec<(i32, i32)> = db::run(pool, |c| {
        dsl::pay_runs
            .select((dsl::paid, dsl::failed))
            .load(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("runs");
    counts.iter().fold((0, 0), |(p, f), (paid, failed)| {
        (p + i64::from(*paid), f + i64::from(*failed))
    })
}

async fn key_conflict_is_not_a_decline(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}, |_| {}).await;
    app.provider()
        .fund("C001", money(10_000, Currency::Eur))
        .await;
    let invoice = app.create_invoice("C001", 1215, "EUR").await;
    let id = invoice["id"].as_str().expect("id");
    // The provider already holds the invoice's key for another request (a charge made by
    // a release that fingerprinted differently, say): charged or not, nobody can tell.
    let charged = app
        .client
        .post(format!("{}/v1/charges", app.provider().base_url))
        .bearer_auth(&app.provider().token)
        .header("Idempotency-Key", format!("invoice-{id}"))
        .json(&json!({"invoice_id": id, "customer_id": "C001",
            "amount": {"minor_units": 1000, "currency": "EUR"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(charged.status().as_u16(), 201);

    let report = app.pay().await;

    assert_eq!(report["summary"]["failed"], 0, "{report}");
    assert_eq!(report["summary"]["retry_later"], 1, "{report}");
    let (_, stored) = app.get_json(&format!("/invoices/{id}")).await;
    assert_eq!(stored["status"], "pending", "never failed: {stored}");
    let attention = stored["attention"].as_str().unwrap_or_default();
    assert!(attention.contains("idempotency_key_reused"), "{stored}");
    assert_eq!(app.provider().ledger().await.len(), 1, "no second charge");
    // It alerts as needing a person, and is left out of the billing objective's clock (its
    // own alert covers it; it would otherwise hold the unsettled alert up for good).
    assert_eq!(
        app.metric("invoice_app_invoices_attention").await,
        Some(1.0)
    );
    assert_eq!(
        app.metric("invoice_app_oldest_unsettled_seconds").await,
        Some(0.0)
    );
}

async fn payment_settled_by_two_runs_is_counted_once(backend: Backend) {
    // A stalls: its call outlives its lease (a pause, a slow network), so B takes the
    // invoice over and both settle the same payment. Only the run whose write changed the
    // row may count it.
    let app = spawn_app_with(
        backend,
        |p| p.faults.latency = Duration::from_millis(2500),
        |a| {
            a.claim_lease = Duration::from_millis(1000);
            a.charge_timeout = Duration::from_secs(5);
        },
    )
    .await;
    app.provider()
        .fund("C001", money(10_000, Currency::Eur))
        .await;
    app.create_invoice("C001", 1215, "EUR").await;
    let mut config = crate::helpers::test_config(&app.db, &app.provider().base_url);
    config.claim_lease = Duration::from_millis(1000);
    config.retry_max_elapsed = Duration::from_secs(6);
    let b = invoice_app::startup::Application::build(config)
        .await
        .expect("replica starts");
    let b_url = format!("http://127.0.0.1:{}/invoices/pay", b.port());
    tokio::spawn(b.run_until_stopped());

    let a_run = tokio::spawn({
        let (client, url) = (app.client.clone(), app.url("/invoices/pay"));
        async move { client.post(url).send().await.expect("sent").status() }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b_run = app.client.post(b_url).send().await.expect("sent");
    assert_eq!(b_run.status().as_u16(), 200);
    // A may also find its run closed as abandoned (its heartbeat is as late as its lease
    // here): then it writes nothing and answers 503. Either way the payment counts once.
    let a_status = a_run.await.expect("A").as_u16();
    assert!(a_status == 200 || a_status == 503, "A answered {a_status}");

    let pool = db::pool(&app.config.database_url, 1);
    assert_eq!(app.provider().ledger().await.len(), 1);
    assert_eq!(app.invoices("paid").await.len(), 1);
    assert_eq!(
        run_totals(&pool).await,
        (1, 0),
        "one payment, counted by one run"
    );
}

async fn a_run_closed_while_it_stalled_stops_and_writes_nothing_more(backend: Backend) {
    // The run's row is closed as abandoned while it works (its heartbeat was late: a
    // stalled process). It must not count, settle or claim any more, and must not come
    // back as completed; a later run pays what it left.
    let app = spawn_app_with(
        backend,
        |p| p.faults.latency = Duration::from_millis(300),
        |a| {
            a.pay_concurrency = 1;
            a.claim_lease = Duration::from_secs(2);
            a.retry_max_elapsed = Duration::from_secs(1);
        },
    )
    .await;
    app.provider()
        .fund("C001", money(100_000_000, Currency::Eur))
        .await;
    let pool = db::pool(&app.config.database_url, 1);
    create_eur_invoices(&pool, 12).await;
    let location = app.start_pay_run().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let id = location.trim_start_matches("/pay-runs/").to_owned();
    db::run(&pool, move |c| {
        use schema::pay_runs::dsl;
        diesel::update(dsl::pay_runs.find(id))
            .set(dsl::status.eq("abandoned"))
            .execute(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("closed");
    let run = app.wait_for_run(&location).await;
    assert_eq!(run["status"], "abandoned", "{run}");
    let counted = run["summary"]["paid"].as_i64().expect("paid");
    assert!(counted < 12, "the closed run stopped: {run}");

    // Its leases lapse; meanwhile its row says the same (what it had when closed: later
    // settlements roll back). The next run pays the rest, and the records add up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, later) = app.get_json(&location).await;
    assert_eq!(later["status"], "abandoned", "{later}");
    assert_eq!(later["summary"]["paid"].as_i64(), Some(counted), "{later}");
    let report = app.pay().await;
    assert_eq!(app.invoices("paid").await.len(), 12, "{report}");
    assert_eq!(run_totals(&pool).await, (12, 0));
    assert_eq!(app.provider().ledger().await.len(), 12);
    let started: i64 = db::run(&pool, |c| {
        use schema::payment_attempts::dsl;
        dsl::payment_attempts
            .filter(dsl::outcome.eq("started"))
            .count()
            .get_result(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("attempts");
    assert_eq!(started, 0, "attempts left started");
}

both_backends!(
    a_run_closed_while_it_stalled_stops_and_writes_nothing_more,
    payment_settled_by_two_runs_is_counted_once,
    retry_after_beyond_the_budget_ends_the_turn_at_once,
    retry_after_within_the_budget_is_honoured_and_the_budget_still_ends,
    queued_claims_are_called_once_per_run,
    key_conflict_is_not_a_decline,
);

postgres_only!(postgres_failed_claim_keeps_what_the_run_settled => failed_claim_keeps_what_the_run_settled);

/// A claim that fails mid-run stops the run; what it settled before stays on its record.
async fn failed_claim_keeps_what_the_run_settled() {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let app = spawn_app_with(Backend::Postgres, |_| {}, |a| a.pay_concurrency = 4).await;
    app.provider()
        .fund("C001", money(100_000_000, Currency::Eur))
        .await;
    let pool = db::pool(&app.config.database_url, 1);
    create_eur_invoices(&pool, 60).await;
    // From the 30th invoice on, claiming fails (batches are 16 and in id order).
    let db::DbUrl::Postgres(url) = &app.config.database_url else {
        unreachable!("PostgreSQL")
    };
    let mut pg = diesel::PgConnection::establish(url).expect("connected");
    let ids: Vec<String> = schema::invoices::table
        .select(schema::invoices::id)
        .order(schema::invoices::id)
        .load(&mut pg)
        .expect("ids");
    pg.batch_execute(&format!(
        "CREATE FUNCTION refuse_late_claims() RETURNS trigger AS $$ BEGIN \
           IF NEW.status = 'processing' AND OLD.status = 'pending' AND NEW.id >= '{}' THEN \
             RAISE EXCEPTION 'claim refused by the test'; \
           END IF; RETURN NEW; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER refuse_late_claims BEFORE UPDATE ON invoices \
           FOR EACH ROW EXECUTE FUNCTION refuse_late_claims();",
        ids[29]
    ))
    .expect("trigger installed");

    let location = app.start_pay_run().await;
    let run = app.wait_for_run(&location).await;

    assert_eq!(run["status"], "failed", "{run}");
    let paid = schema::invoices::table
        .filter(schema::invoices::status.eq("paid"))
        .count()
        .get_result::<i64>(&mut pg)
        .expect("count");
    assert!(
        paid >= 16,
        "the first batch was paid before the claim failed"
    );
    assert_eq!(
        run["summary"]["paid"].as_i64(),
        Some(paid),
        "the failed run's record keeps what it paid: {run}"
    );
    assert_eq!(app.provider().ledger().await.len() as i64, paid);
}
