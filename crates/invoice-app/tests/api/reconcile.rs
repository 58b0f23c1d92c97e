//! Reconciliation against the real provider, run by the real `invoice-app reconcile`: an
//! invoice that may have been charged is looked up by its key and settled from what the
//! provider holds. Each test reads both databases (ledger, invoices, attempts, run rows),
//! not only the answers.

use std::time::Duration;

use api_contract::Currency;
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use invoice_app::db::{self, schema};
use payment_provider::auth::CallerTokens;
use serde_json::{Value, json};
use test_support::{DbUrl, TEST_TOKEN, both_backends};

use crate::dunning::invoice;
use crate::helpers::{Backend, TestApp, money, spawn_app_with};

/// What the real binary printed and whether it succeeded.
struct CliRun {
    success: bool,
    summary: Value,
    stderr: String,
}

/// `invoice-app <args>` on `app`'s database and provider, presenting `token`.
async fn cli(app: &TestApp, args: &[&str], token: &str) -> CliRun {
    let database_url = match &app.db.url {
        DbUrl::Postgres(url) => url.clone(),
        DbUrl::Sqlite(path) => format!("sqlite://{path}"),
    };
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_invoice-app"));
    command
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("PAYMENT_PROVIDER_URL", &app.provider().base_url)
        .env("PAYMENT_PROVIDER_TOKEN", token)
        .env("SEED", "none")
        .env("LOG_FORMAT", "json");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("task")
        .expect("invoice-app runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    CliRun {
        success: output.status.success(),
        summary: stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn reconcile(app: &TestApp) -> Value {
    let run = cli(app, &["reconcile"], TEST_TOKEN).await;
    assert!(run.success, "reconcile failed: {}", run.stderr);
    assert_eq!(run.summary["status"], "completed", "{}", run.summary);
    run.summary
}

/// An invoice's attempts from the audit trail, oldest first: (kind, outcome, key, charge).
async fn attempts(app: &TestApp, id: &str) -> Vec<(String, String, String, Option<String>)> {
    use schema::payment_attempts::dsl;
    let pool = db::pool(&app.config.database_url, 1);
    let id = id.to_owned();
    db::run(&pool, move |c| {
        dsl::payment_attempts
            .filter(dsl::invoice_id.eq(id))
            .order((dsl::started_at, dsl::id))
            .select((
                dsl::kind,
                dsl::outcome,
                dsl::idempotency_key,
                dsl::charge_id,
            ))
            .load(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("attempts")
}

/// The reconcile runs' rows: (status, paid, failed, retry_later).
async fn reconcile_runs(app: &TestApp) -> Vec<(String, i32, i32, i32)> {
    use schema::pay_runs::dsl;
    let pool = db::pool(&app.config.database_url, 1);
    db::run(&pool, |c| {
        dsl::pay_runs
            .filter(dsl::kind.eq("reconcile"))
            .order(dsl::started_at)
            .select((dsl::status, dsl::paid, dsl::failed, dsl::retry_later))
            .load(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("runs")
}

/// Waits up to 10 s for the provider's ledger to hold `n` charges.
async fn until_ledger_holds(app: &TestApp, n: usize) {
    for _ in 0..200 {
        if app.provider().ledger().await.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the ledger never held {n} charges");
}

/// The charge's answer comes after invoice-app stopped waiting and its retry budget is
/// spent: the run hands the invoice back pending, its attempt `unknown`, while the provider
/// completes the charge. `invoice-app reconcile` finds the charge under the key and pays
/// the invoice with it: one charge in the ledger, one debit, a `lookup` attempt on record.
/// Red when reconciliation settles a found charge as anything but paid, or charges.
async fn a_charged_but_pending_invoice_is_reconciled_to_paid(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |p| p.faults.latency = Duration::from_millis(1500),
        |a| {
            a.charge_timeout = Duration::from_millis(400);
            a.retry_max_elapsed = Duration::from_millis(100);
        },
    )
    .await;
    app.provider()
        .fund("C001", money(10_000, Currency::Eur))
        .await;
    let id = app.create_invoice("C001", 1215, "EUR").await["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let report = app.pay().await;
    assert_eq!(report["summary"]["retry_later"], 1, "{report}");
    until_ledger_holds(&app, 1).await;
    let pending = invoice(&app, &id).await;
    assert_eq!(pending["status"], "pending", "{pending}");
    assert_eq!(pending["charge_id"], Value::Null);
    let before = attempts(&app, &id).await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(
        (before[0].0.as_str(), before[0].1.as_str()),
        ("charge", "unknown")
    );

    let summary = reconcile(&app).await;

    assert_eq!(summary["paid"], 1, "{summary}");
    let ledger = app.provider().ledger().await;
    assert_eq!(ledger.len(), 1, "no second charge: {ledger:?}");
    assert_eq!(app.provider().balance("C001").await, Some(10_000 - 1215));
    let paid = invoice(&app, &id).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["charge_id"], ledger[0].id.as_str());
    let after = attempts(&app, &id).await;
    let key = format!("invoice-{id}");
    assert_eq!(
        after[1],
        (
            "lookup".to_owned(),
            "succeeded".to_owned(),
            key.clone(),
            Some(ledger[0].id.clone())
        )
    );
    // The API shows it too, with what started it.
    let (_, listed) = app.get_json(&format!("/invoices/{id}/attempts")).await;
    assert_eq!(listed["items"][1]["kind"], "lookup", "{listed}");
    assert_eq!(listed["items"][1]["trigger"], "cli", "{listed}");
    assert_eq!(
        reconcile_runs(&app).await,
        [("completed".to_owned(), 1, 0, 0)]
    );

    // Settled for good: no run charges it and no reconciliation looks it up again.
    app.pay().await;
    let again = reconcile(&app).await;
    assert_eq!(
        (&again["paid"], &again["retry_later"]),
        (&json!(0), &json!(0)),
        "{again}"
    );
    assert_eq!(attempts(&app, &id).await.len(), 2);
    assert_eq!(app.provider().ledger().await.len(), 1);
}

/// Refused for our credential (attention), so nothing was charged: reconciliation finds
/// nothing under the key and releases it, attention cleared; the next run charges it
/// under that same key, once. Red when a not-found lookup is settled as paid or left in
/// attention.
async fn a_never_charged_invoice_is_released(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |_| {},
        |a| a.provider_token = Some("not-a-token-the-provider-knows".to_owned().into()),
    )
    .await;
    app.provider()
        .fund("C001", money(10_000, Currency::Eur))
        .await;
    let id = app.create_invoice("C001", 1215, "EUR").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.pay().await;
    let refused = invoice(&app, &id).await;
    assert!(
        refused["attention"]
            .as_str()
            .is_some_and(|a| a.contains("401")),
        "{refused}"
    );

    let summary = reconcile(&app).await;

    assert_eq!(summary["retry_later"], 1, "{summary}");
    let released = invoice(&app, &id).await;
    assert_eq!(released["status"], "pending", "{released}");
    assert_eq!(released["attention"], Value::Null, "{released}");
    assert!(app.provider().ledger().await.is_empty());
    assert_eq!(
        reconcile_runs(&app).await,
        [("completed".to_owned(), 0, 0, 1)]
    );
    // Released, so no longer a candidate: the next reconciliation leaves it alone.
    let again = reconcile(&app).await;
    assert_eq!(again["retry_later"], 0, "{again}");

    let paid = cli(&app, &["pay"], TEST_TOKEN).await;
    assert!(paid.success, "{}", paid.stderr);
    assert_eq!(paid.summary["paid"], 1, "{}", paid.summary);
    let ledger = app.provider().ledger().await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    let key = format!("invoice-{id}");
    assert_eq!(ledger[0].idempotency_key, key, "charged under the same key");
    let kinds: Vec<(String, String)> = attempts(&app, &id)
        .await
        .into_iter()
        .map(|(kind, outcome, k, _)| {
            assert_eq!(k, key);
            (kind, outcome)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("charge".to_owned(), "attention".to_owned()),
            ("lookup".to_owned(), "not_found".to_owned()),
            ("charge".to_owned(), "succeeded".to_owned()),
        ]
    );
}

/// The invoice's key holds a charge of another amount (key reuse): reconciliation neither
/// pays the invoice with it nor charges again; it stays in attention, which now names the
/// charge found and its amount. Red when a found charge is taken for the invoice's
/// without comparing it.
async fn a_key_reuse_stays_in_attention_with_what_was_found(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}, |_| {}).await;
    app.provider()
        .fund("C001", money(10_000, Currency::Eur))
        .await;
    let id = app.create_invoice("C001", 1215, "EUR").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let key = format!("invoice-{id}");
    let earlier = app
        .client
        .post(format!("{}/v1/charges", app.provider().base_url))
        .bearer_auth(&app.provider().token)
        .header("Idempotency-Key", &key)
        .json(&json!({"invoice_id": id, "customer_id": "C001",
            "amount": {"minor_units": 1000, "currency": "EUR"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(earlier.status().as_u16(), 201);
    app.pay().await;

    let summary = reconcile(&app).await;

    assert_eq!(
        (&summary["paid"], &summary["retry_later"]),
        (&json!(0), &json!(1)),
        "{summary}"
    );
    let ledger = app.provider().ledger().await;
    assert_eq!(ledger.len(), 1, "no second charge: {ledger:?}");
    let stored = invoice(&app, &id).await;
    assert_eq!(stored["status"], "pending", "{stored}");
    assert_eq!(stored["charge_id"], Value::Null, "{stored}");
    let attention = stored["attention"].as_str().unwrap_or_default();
    assert!(
        attention.contains(&ledger[0].id) && attention.contains("10.00 EUR"),
        "{attention}"
    );
    let last = attempts(&app, &id).await.pop().expect("attempts");
    assert_eq!(
        last,
        (
            "lookup".to_owned(),
            "attention".to_owned(),
            key,
            Some(ledger[0].id.clone())
        )
    );
    assert_eq!(app.provider().balance("C001").await, Some(10_000 - 1000));
}

/// Keys belong to their caller at the provider: a key only another caller used reads as
/// never used to invoice-app's lookup, so reconciliation releases the invoice, and the next
/// run makes invoice-app's own charge. Red when the lookup ignores the caller.
async fn another_callers_key_reads_as_not_found(backend: Backend) {
    const OTHER: &str = "token-of-another-caller-0123456789";
    let callers = CallerTokens::parse(&format!("invoice-app:{TEST_TOKEN},other:{OTHER}"))
        .expect("valid tokens");
    let app = spawn_app_with(
        backend,
        move |p| p.callers = Some(callers),
        |a| a.provider_token = Some("not-a-token-the-provider-knows".to_owned().into()),
    )
    .await;
    app.provider()
        .fund("C001", money(10_000, Currency::Eur))
        .await;
    let id = app.create_invoice("C001", 1215, "EUR").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let key = format!("invoice-{id}");
    // In attention (our credential refused), then another caller charges under its key.
    app.pay().await;
    let body = json!({"invoice_id": id, "customer_id": "C001",
        "amount": {"minor_units": 1215, "currency": "EUR"}});
    let charged = app
        .client
        .post(format!("{}/v1/charges", app.provider().base_url))
        .bearer_auth(OTHER)
        .header("Idempotency-Key", &key)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(charged.status().as_u16(), 201);
    let look_up = |token: &'static str| {
        app.client
            .get(format!("{}/v1/charges", app.provider().base_url))
            .query(&[("idempotency_key", key.as_str())])
            .bearer_auth(token)
            .send()
    };
    let ours = look_up(TEST_TOKEN).await.expect("sent");
    let ours = crate::helpers::assert_problem(ours, 404, "key_not_found").await;
    assert_eq!(ours["status"], 404);
    assert_eq!(look_up(OTHER).await.expect("sent").status().as_u16(), 200);

    let summary = reconcile(&app).await;

    assert_eq!(
        (&summary["paid"], &summary["retry_later"]),
        (&json!(0), &json!(1)),
        "{summary}"
    );
    let released = invoice(&app, &id).await;
    assert_eq!(
        (
            &released["status"],
            &released["charge_id"],
            &released["attention"]
        ),
        (&json!("pending"), &Value::Null, &Value::Null),
        "not paid with another caller's charge: {released}"
    );
    let paid = cli(&app, &["pay"], TEST_TOKEN).await;
    assert_eq!(paid.summary["paid"], 1, "{}", paid.summary);
    let mut callers: Vec<String> = app
        .provider()
        .ledger()
        .await
        .into_iter()
        .map(|c| c.caller)
        .collect();
    callers.sort_unstable();
    assert_eq!(callers, ["invoice-app", "other"]);
}

both_backends!(
    a_charged_but_pending_invoice_is_reconciled_to_paid,
    a_never_charged_invoice_is_released,
    a_key_reuse_stays_in_attention_with_what_was_found,
    another_callers_key_reads_as_not_found,
);
