//! Operator actions against the real provider: void, retry now and resolve, each recorded
//! with who, when and why, and an invoice that needs attention left alone by the runs until
//! a person resolves it. Each test reads the provider's ledger and invoice-app's tables
//! (invoices, payment_attempts, pay_runs, invoice_actions), not only the API's answers.

use std::time::Duration;

use api_contract::Currency;
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use invoice_app::db::{self, schema};
use invoice_app::domain::InvoiceStatus;
use serde_json::{Value, json};

use crate::dunning::{app_with, invoice, until_due};
use crate::helpers::{Backend, TestApp, assert_problem, money, spawn_app_with};
use crate::records::attempts_per_invoice;
use test_support::both_backends;

/// `POST /invoices/{id}/<action>` with `body` (none when `None`), as the development key.
async fn act(app: &TestApp, id: &str, action: &str, body: Option<Value>) -> reqwest::Response {
    let request = app
        .client
        .post(app.url(&format!("/invoices/{id}/{action}")));
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request.send().await.expect("sent")
}

/// An action that succeeds: the invoice it answers.
async fn acted(app: &TestApp, id: &str, action: &str, body: Option<Value>) -> Value {
    let response = act(app, id, action, body).await;
    let status = response.status().as_u16();
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(status, 200, "{action}: {answer}");
    answer
}

/// `invoice_actions` of invoice `id`, oldest first: (action, actor, reason, pay_run_id).
type ActionRow = (String, String, Option<String>, Option<String>);

async fn actions_of(app: &TestApp, id: &str) -> Vec<ActionRow> {
    use schema::invoice_actions::dsl;
    let pool = db::pool(&app.config.database_url, 1);
    let id = id.to_owned();
    db::run(&pool, move |c| {
        dsl::invoice_actions
            .filter(dsl::invoice_id.eq(id))
            .order(dsl::id)
            .select((dsl::action, dsl::actor, dsl::reason, dsl::pay_run_id))
            .load(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("actions")
}

/// Every pay run: (id, kind, trigger, started_by, paid, retry_later), oldest first.
type RunRow = (String, String, String, Option<String>, i32, i32);

async fn pay_runs(app: &TestApp) -> Vec<RunRow> {
    use schema::pay_runs::dsl;
    let pool = db::pool(&app.config.database_url, 1);
    db::run(&pool, |c| {
        dsl::pay_runs
            .order(dsl::started_at)
            .select((
                dsl::id,
                dsl::kind,
                dsl::trigger,
                dsl::started_by,
                dsl::paid,
                dsl::retry_later,
            ))
            .load(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("runs")
}

/// The idempotency keys invoice `id` was called with, in order.
async fn keys_called(app: &TestApp, id: &str) -> Vec<String> {
    use schema::payment_attempts::dsl;
    let pool = db::pool(&app.config.database_url, 1);
    let id = id.to_owned();
    db::run(&pool, move |c| {
        dsl::payment_attempts
            .filter(dsl::invoice_id.eq(id))
            .order(dsl::id)
            .select(dsl::idempotency_key)
            .load(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("attempts")
}

/// Puts invoice `id` in `processing`, held by a live claim of another process.
async fn hold(app: &TestApp, id: &str) {
    use schema::invoices::dsl;
    let pool = db::pool(&app.config.database_url, 1);
    let id = id.to_owned();
    db::run(&pool, move |c| {
        let lease = db::clock::now() + chrono::TimeDelta::minutes(5);
        diesel::update(dsl::invoices.find(id))
            .set((
                dsl::status.eq(InvoiceStatus::Processing),
                dsl::claimed_by.eq("another-process"),
                dsl::lease_until.eq(lease),
            ))
            .execute(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("held");
}

fn id_of(invoice: &Value) -> String {
    invoice["id"].as_str().expect("id").to_owned()
}

/// A pending and a past-due invoice are voided (who, when, why on record); neither is
/// called or charged again, funds or not, due or not; a paid one and a void one refuse.
async fn a_void_invoice_is_never_charged(backend: Backend) {
    let app = app_with(backend, "1s,2s", 50).await;
    let past_due = id_of(&app.create_invoice("C001", 120, "EUR").await);
    app.pay().await;
    let before = invoice(&app, &past_due).await;
    assert_eq!(before["status"], "past_due", "{before}");
    let pending = id_of(&app.create_invoice("C001", 130, "EUR").await);

    let reason = "the customer cancelled the order (ticket 4711)";
    for id in [&past_due, &pending] {
        let voided = acted(&app, id, "void", Some(json!({ "reason": reason }))).await;
        assert_eq!(voided["status"], "void", "{voided}");
        assert_eq!(voided["next_attempt_at"], Value::Null, "{voided}");
        assert_eq!(
            actions_of(&app, id).await,
            vec![("void".into(), "dev".into(), Some(reason.into()), None)]
        );
    }
    assert_eq!(app.invoices("void").await.len(), 2);
    assert_eq!(
        app.metric("invoice_app_invoices{status=\"void\"}").await,
        Some(1.0 + 1.0)
    );

    // Funds arrive and the past-due retry comes due: no run calls either.
    app.provider()
        .deposit("C001", money(10_000, Currency::Eur))
        .await;
    until_due(&before).await;
    for _ in 0..2 {
        let report = app.pay().await;
        assert_eq!(
            report["summary"],
            json!({"paid": 0, "failed": 0, "retry_later": 0}),
            "{report}"
        );
    }
    let attempts = attempts_per_invoice(&app).await;
    assert_eq!(attempts.get(&past_due), Some(&1), "only the first decline");
    assert_eq!(attempts.get(&pending), None, "never called");
    assert!(app.provider().ledger().await.is_empty());
    assert_eq!(app.provider().balance("C001").await, Some(50 + 10_000));

    // Settled invoices refuse, and stay as they are.
    let void_again = act(&app, &pending, "void", Some(json!({ "reason": reason }))).await;
    assert_problem(void_again, 409, "invoice_settled").await;
    let paid = id_of(&app.create_invoice("C001", 140, "EUR").await);
    app.pay().await;
    assert_eq!(invoice(&app, &paid).await["status"], "paid");
    let void_paid = act(&app, &paid, "void", Some(json!({ "reason": reason }))).await;
    assert_problem(void_paid, 409, "invoice_settled").await;
    assert_eq!(invoice(&app, &paid).await["status"], "paid");
    assert!(
        actions_of(&app, &paid).await.is_empty(),
        "a refusal is no action"
    );
    assert_eq!(app.provider().ledger().await.len(), 1);
}

/// A past-due invoice retried now: declined again (counted as a dunning retry, under the
/// next key), then paid once funds arrive, with one charge in the ledger; each retry is a
/// run of its own started by the caller, and on record with its run.
async fn retry_now_pays_a_past_due_invoice_once_funds_arrive(backend: Backend) {
    // Retries an hour apart: no run would try it again within the test.
    let app = app_with(backend, "1h,2h,3h", 50).await;
    let id = id_of(&app.create_invoice("C001", 120, "EUR").await);
    app.pay().await;
    assert_eq!(invoice(&app, &id).await["attempt_count"], 1);

    let declined = acted(&app, &id, "retry", None).await;
    assert_eq!(declined["status"], "past_due", "{declined}");
    assert_eq!(declined["attempt_count"], 2, "{declined}");
    assert!(app.provider().ledger().await.is_empty());

    app.provider()
        .deposit("C001", money(100, Currency::Eur))
        .await;
    let reason = "funds arrived by bank transfer";
    let paid = acted(&app, &id, "retry", Some(json!({ "reason": reason }))).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    let ledger = app.provider().ledger().await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].invoice_id, id);
    assert_eq!(paid["charge_id"], ledger[0].id.as_str());
    assert_eq!(app.provider().balance("C001").await, Some(50 + 100 - 120));
    // A dunning retry's keys: the n-th retry after n declines.
    assert_eq!(
        keys_called(&app, &id).await,
        [
            format!("invoice-{id}"),
            format!("invoice-{id}-retry-1"),
            format!("invoice-{id}-retry-2"),
        ]
    );

    // Two runs of their own, started by the caller, each on record with its action.
    let runs = pay_runs(&app).await;
    assert_eq!(runs.len(), 3, "{runs:?}");
    let retries = &runs[1..];
    for (run, paid) in retries.iter().zip([0, 1]) {
        assert_eq!(
            (&run.1[..], &run.2[..], run.3.as_deref(), run.4),
            ("pay", "api", Some("dev"), paid),
            "{run:?}"
        );
    }
    assert_eq!(
        actions_of(&app, &id).await,
        vec![
            (
                "retry".into(),
                "dev".into(),
                None,
                Some(retries[0].0.clone())
            ),
            (
                "retry".into(),
                "dev".into(),
                Some(reason.into()),
                Some(retries[1].0.clone())
            ),
        ]
    );
    let (code, page) = app
        .get_json(&format!("/invoices/{id}/actions?limit=1"))
        .await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(page["items"][0]["action"], "retry", "{page}");
    assert_eq!(page["items"][0]["pay_run_id"], retries[0].0.as_str());
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, rest) = app
        .get_json(&format!("/invoices/{id}/actions?cursor={cursor}"))
        .await;
    assert_eq!(rest["items"][0]["reason"], reason, "{rest}");
    assert_eq!(rest["next_cursor"], Value::Null);

    // Paid: a retry refuses, and runs leave it alone.
    assert_problem(act(&app, &id, "retry", None).await, 409, "invoice_settled").await;
    app.pay().await;
    assert_eq!(attempts_per_invoice(&app).await[&id], 3);
    assert_eq!(app.provider().ledger().await.len(), 1);
    assert_eq!(
        pay_runs(&app).await.len(),
        4,
        "a refused retry starts no run"
    );
}

/// A pending invoice a run is charging refuses every action (its run decides first), and
/// none is recorded; a bad body is a client's mistake, never a 500.
async fn actions_refuse_an_invoice_being_charged_and_bad_bodies(backend: Backend) {
    let app = app_with(backend, "1s", 10_000).await;
    let id = id_of(&app.create_invoice("C001", 120, "EUR").await);
    hold(&app, &id).await;
    let reason = json!({"reason": "checked"});
    for (action, body) in [
        ("void", Some(reason.clone())),
        ("retry", None),
        (
            "resolve",
            Some(json!({"action": "dismiss", "reason": "checked"})),
        ),
    ] {
        let refused = act(&app, &id, action, body).await;
        let problem = assert_problem(refused, 409, "invoice_processing").await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("try again"),
            "{problem}"
        );
    }
    assert_eq!(invoice(&app, &id).await["status"], "processing");
    assert!(actions_of(&app, &id).await.is_empty());
    assert_eq!(
        pay_runs(&app).await.len(),
        0,
        "a refused retry starts no run"
    );

    let pending = id_of(&app.create_invoice("C001", 130, "EUR").await);
    let long = "x".repeat(501);
    for (action, body, status, code) in [
        ("void", json!({}), 422, "invalid_request"),
        ("void", json!({"reason": ""}), 422, "invalid_request"),
        ("void", json!({"reason": "   "}), 422, "invalid_request"),
        ("void", json!({"reason": long}), 422, "invalid_request"),
        (
            "void",
            json!({"reason": "bell\u{7}"}),
            422,
            "invalid_request",
        ),
        ("void", json!({"reason": 7}), 422, "invalid_request"),
        (
            "void",
            json!({"reason": "ok", "extra": 1}),
            422,
            "invalid_request",
        ),
        (
            "retry",
            json!({"reason": "line\nbreak"}),
            422,
            "invalid_request",
        ),
        ("retry", json!({"reason": 5}), 422, "invalid_request"),
        (
            "resolve",
            json!({"reason": "checked"}),
            422,
            "invalid_request",
        ),
        (
            "resolve",
            json!({"action": "dismiss"}),
            422,
            "invalid_request",
        ),
        (
            "resolve",
            json!({"action": "forget", "reason": "checked"}),
            422,
            "invalid_request",
        ),
        (
            "resolve",
            json!({"action": "reconcile", "reason": "checked"}),
            422,
            "action_not_available",
        ),
    ] {
        let answer = act(&app, &pending, action, Some(body.clone())).await;
        let problem = assert_problem(answer, status, code).await;
        assert!(
            !problem.to_string().contains("Internal"),
            "{action} {body}: {problem}"
        );
    }
    for action in ["void", "retry", "resolve"] {
        let malformed = app
            .client
            .post(app.url(&format!("/invoices/{pending}/{action}")))
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .expect("sent");
        assert_problem(malformed, 400, "malformed_request").await;
        let text = app
            .client
            .post(app.url(&format!("/invoices/{pending}/{action}")))
            .header("content-type", "text/plain")
            .body("reason")
            .send()
            .await
            .expect("sent");
        assert_problem(text, 415, "unsupported_media_type").await;
        let huge = app
            .client
            .post(app.url(&format!("/invoices/{pending}/{action}")))
            .header("content-type", "application/json")
            .body(format!("{{\"reason\": \"{}\"}}", "x".repeat(64 * 1024)))
            .send()
            .await
            .expect("sent");
        assert_problem(huge, 413, "payload_too_large").await;
        let valid = match action {
            "void" => Some(json!({"reason": "x"})),
            "resolve" => Some(json!({"action": "dismiss", "reason": "x"})),
            _ => None,
        };
        for id in ["no-such-invoice", "0195b4c0-7a10-7000-8000-000000000002"] {
            let unknown = act(&app, id, action, valid.clone()).await;
            assert_problem(unknown, 404, "not_found").await;
        }
        let (status, _) = app.get_json("/invoices/no-such-invoice/actions").await;
        assert_eq!(status, 404);
    }
    let (status, _) = app
        .get_json(&format!("/invoices/{pending}/actions?cursor=../x"))
        .await;
    assert_eq!(status, 400);
    // A pending invoice needing no attention has nothing to resolve.
    let nothing = act(
        &app,
        &pending,
        "resolve",
        Some(json!({"action": "dismiss", "reason": "checked"})),
    )
    .await;
    assert_problem(nothing, 409, "nothing_to_resolve").await;
    assert_eq!(invoice(&app, &pending).await["status"], "pending");
    assert!(actions_of(&app, &pending).await.is_empty());
    assert!(app.provider().ledger().await.is_empty());
}

/// The provider holds the invoice's key for another request (a key-reuse 422): attention.
/// Three more runs do not call it again; a retry refuses until a person resolves it. Once
/// dismissed, the next run calls it once more (the same 422: attention again, and again
/// left alone), and the person voids it. One charge in the ledger throughout: the other
/// request's.
async fn a_key_reuse_invoice_is_not_called_again_until_resolved(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}, |_| {}).await;
    app.provider()
        .fund("C001", money(10_000, Currency::Eur))
        .await;
    let id = id_of(&app.create_invoice("C001", 1215, "EUR").await);
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

    let first = app.pay().await;
    assert_eq!(first["summary"]["retry_later"], 1, "{first}");
    let marked = invoice(&app, &id).await;
    assert!(
        marked["attention"]
            .as_str()
            .unwrap_or_default()
            .contains("idempotency_key_reused"),
        "{marked}"
    );
    for _ in 0..3 {
        let report = app.pay().await;
        assert_eq!(
            report["summary"],
            json!({"paid": 0, "failed": 0, "retry_later": 0}),
            "not taken: {report}"
        );
    }
    assert_eq!(
        attempts_per_invoice(&app).await[&id],
        1,
        "called once in 4 runs"
    );
    assert_eq!(
        app.metric("invoice_app_invoices_attention").await,
        Some(1.0)
    );
    let refused = act(&app, &id, "retry", None).await;
    assert_problem(refused, 409, "invoice_needs_attention").await;
    let reconcile = act(
        &app,
        &id,
        "resolve",
        Some(json!({"action": "reconcile", "reason": "look it up"})),
    )
    .await;
    assert_problem(reconcile, 422, "action_not_available").await;
    assert_eq!(attempts_per_invoice(&app).await[&id], 1);

    let reason = "ledger checked: the other request charged 10.00 EUR, not this invoice";
    let dismissed = acted(
        &app,
        &id,
        "resolve",
        Some(json!({"action": "dismiss", "reason": reason})),
    )
    .await;
    assert_eq!(dismissed["status"], "pending", "{dismissed}");
    assert_eq!(dismissed["attention"], Value::Null, "{dismissed}");
    assert_eq!(
        app.metric("invoice_app_invoices_attention").await,
        Some(0.0)
    );
    let again = app.pay().await;
    assert_eq!(again["summary"]["retry_later"], 1, "called again: {again}");
    for _ in 0..2 {
        app.pay().await;
    }
    assert_eq!(attempts_per_invoice(&app).await[&id], 2);
    let voided = acted(
        &app,
        &id,
        "void",
        Some(json!({"reason": "billed by hand instead"})),
    )
    .await;
    assert_eq!(voided["status"], "void");
    assert_eq!(voided["attention"], Value::Null);
    let actions: Vec<String> = actions_of(&app, &id)
        .await
        .into_iter()
        .map(|a| a.0)
        .collect();
    assert_eq!(actions, ["dismiss", "void"]);
    assert_eq!(app.provider().ledger().await.len(), 1, "no charge of ours");
}

/// Our credential refused (401): attention, and no run calls it again; the credential is
/// fixed, a person dismisses it, and the next run pays it, once.
async fn a_refused_credential_waits_for_a_person_then_pays(backend: Backend) {
    let dir = std::env::temp_dir().join(format!("ia-actions-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("token");
    std::fs::write(&file, "a-token-the-provider-never-issued").expect("write");
    let path = file.to_str().expect("utf-8 path").to_owned();
    let from_env = invoice_app::config::Config::from_lookup(&|name| {
        (name == "PAYMENT_PROVIDER_TOKEN_FILE").then(|| path.clone())
    })
    .expect("valid configuration");
    let app = spawn_app_with(
        backend,
        |_| {},
        |c| {
            c.provider_token = from_env.provider_token;
            c.provider_token_file = from_env.provider_token_file;
            c.retry_max_elapsed = Duration::from_secs(1);
        },
    )
    .await;
    app.provider()
        .fund("C001", money(10_000, Currency::Eur))
        .await;
    let id = id_of(&app.create_invoice("C001", 120, "EUR").await);
    app.pay().await;
    let marked = invoice(&app, &id).await;
    assert!(marked["attention"].is_string(), "{marked}");
    std::fs::write(&file, test_support::TEST_TOKEN).expect("rewrite");
    for _ in 0..3 {
        app.pay().await;
    }
    assert_eq!(
        attempts_per_invoice(&app).await[&id],
        1,
        "not called until resolved"
    );
    assert!(app.provider().ledger().await.is_empty());

    acted(
        &app,
        &id,
        "resolve",
        Some(json!({"action": "dismiss", "reason": "token rotated"})),
    )
    .await;
    let report = app.pay().await;
    assert_eq!(report["summary"]["paid"], 1, "{report}");
    assert_eq!(invoice(&app, &id).await["status"], "paid");
    assert_eq!(app.provider().ledger().await.len(), 1);
    assert_eq!(attempts_per_invoice(&app).await[&id], 2);
    std::fs::remove_dir_all(dir).ok();
}

both_backends!(
    a_void_invoice_is_never_charged,
    retry_now_pays_a_past_due_invoice_once_funds_arrive,
    actions_refuse_an_invoice_being_charged_and_bad_bodies,
    a_key_reuse_invoice_is_not_called_again_until_resolved,
    a_refused_credential_waits_for_a_person_then_pays,
);
