//! `GET /invoices/{id}/attempts`: every call to the provider for an invoice, oldest first,
//! with its outcome, the provider's code, the charge, the key, and what started its run;
//! against the real provider, the real `invoice-app pay` and the audit trail itself.

use std::collections::BTreeSet;
use std::time::Duration;

use api_contract::{Currency, InvoiceId};
use diesel::RunQueryDsl;
use diesel::migration::MigrationSource;
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use invoice_app::db::{self, AnyConnection};
use invoice_app::invoices::{self, AttemptQuery};
use serde_json::{Value, json};

use crate::dunning::{app_with, invoice, until_due};
use crate::helpers::{
    Backend, TestApp, assert_problem, db_url, money, pay_command, spawn_app_with,
};
use test_support::{Service, TestDb, both_backends};

/// Every page of `id`'s attempts, `limit` at a time, following `next_cursor`; the pages'
/// sizes too.
async fn all_attempts(app: &TestApp, id: &str, limit: usize) -> (Vec<Value>, Vec<usize>) {
    let (mut items, mut sizes) = (Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/invoices/{id}/attempts?limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = app.get_json(&path).await;
        assert_eq!(status, 200, "{path}: {page}");
        let page_items = page["items"].as_array().expect("items");
        sizes.push(page_items.len());
        items.extend(page_items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (items, sizes),
        }
        assert!(sizes.len() < 100, "pages never end: {sizes:?}");
    }
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

/// The fields the OpenAPI document gives an attempt: an answer shows exactly these.
fn documented_fields() -> BTreeSet<String> {
    let document: Value =
        serde_json::from_str(&invoice_app::http::openapi_json().expect("document")).expect("JSON");
    document["components"]["schemas"]["Attempt"]["properties"]
        .as_object()
        .expect("Attempt properties")
        .keys()
        .cloned()
        .collect()
}

fn fields(item: &Value) -> BTreeSet<String> {
    item.as_object().expect("object").keys().cloned().collect()
}

/// Declined for insufficient funds by a run a caller started, paid by the CronJob's
/// `invoice-app pay` once funds arrived: two attempts, in order, with their outcomes,
/// codes, keys, charges and runs; another invoice's attempt stays its own.
async fn a_soft_decline_and_the_paid_retry_show_in_order(backend: Backend) {
    let app = app_with(backend, "1s,2s", 50).await;
    app.provider().fund("C002", money(500, Currency::Eur)).await;
    let id = text(&app.create_invoice("C001", 120, "EUR").await, "id").to_owned();
    let other = text(&app.create_invoice("C002", 100, "EUR").await, "id").to_owned();

    let (status, untried) = app.get_json(&format!("/invoices/{id}/attempts")).await;
    assert_eq!(status, 200);
    assert_eq!(untried, json!({"items": [], "next_cursor": null}));

    let first_run = app.pay().await;
    let past_due = invoice(&app, &id).await;
    assert_eq!(past_due["status"], "past_due", "{past_due}");
    app.provider()
        .deposit("C001", money(100, Currency::Eur))
        .await;
    until_due(&past_due).await;
    let out = pay_command(&app).output().expect("invoice-app pay runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paid = invoice(&app, &id).await;
    assert_eq!(paid["status"], "paid", "{paid}");

    let (attempts, _) = all_attempts(&app, &id, 100).await;
    let [declined, succeeded] = attempts.as_slice() else {
        panic!("two attempts: {attempts:?}");
    };
    let documented = documented_fields();
    for attempt in [declined, succeeded] {
        assert_eq!(fields(attempt), documented, "{attempt}");
    }

    assert_eq!(declined["outcome"], "declined", "{declined}");
    assert_eq!(declined["provider_code"], "insufficient_funds");
    assert_eq!(declined["http_status"], 402);
    assert_eq!(declined["sent"], "yes");
    assert_eq!(declined["charge_id"], Value::Null);
    assert_eq!(declined["idempotency_key"], format!("invoice-{id}"));
    assert!(
        text(declined, "detail").starts_with("insufficient_funds: "),
        "{declined}"
    );
    assert_eq!(declined["pay_run_id"], first_run["run_id"]);
    assert_eq!(declined["trigger"], "api");
    assert_eq!(declined["started_by"], "dev");

    assert_eq!(succeeded["outcome"], "succeeded", "{succeeded}");
    assert_eq!(succeeded["provider_code"], Value::Null);
    assert_eq!(succeeded["http_status"], 201);
    assert_eq!(succeeded["sent"], "yes");
    assert_eq!(succeeded["detail"], Value::Null);
    assert_eq!(
        succeeded["idempotency_key"],
        format!("invoice-{id}-retry-1")
    );
    assert_eq!(succeeded["trigger"], "cli");
    assert_eq!(succeeded["started_by"], Value::Null);
    assert_ne!(succeeded["pay_run_id"], declined["pay_run_id"]);
    let ledger = app.provider().ledger().await;
    let charge = ledger
        .iter()
        .find(|c| c.invoice_id == id)
        .expect("the invoice's charge");
    assert_eq!(succeeded["charge_id"], paid["charge_id"]);
    assert_eq!(succeeded["charge_id"], charge.id.as_str());

    // Oldest first, each finished after it started.
    let time = |a: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(text(a, field))
            .unwrap_or_else(|e| panic!("{field} of {a}: {e}"))
    };
    assert!(time(declined, "started_at") < time(succeeded, "started_at"));
    for attempt in [declined, succeeded] {
        assert!(time(attempt, "started_at") <= time(attempt, "finished_at"));
    }

    let (others, _) = all_attempts(&app, &other, 100).await;
    let [theirs] = others.as_slice() else {
        panic!("one attempt: {others:?}");
    };
    assert_eq!(theirs["idempotency_key"], format!("invoice-{other}"));
    assert_eq!(theirs["outcome"], "succeeded");
    assert_eq!(
        theirs["charge_id"],
        invoice(&app, &other).await["charge_id"]
    );
}

/// More attempts than a page holds, of two invoices tried in the same runs: the pages,
/// followed by their cursors, are the audit trail's attempts of the one invoice, each once
/// and in order.
async fn the_attempts_come_a_page_at_a_time(backend: Backend) {
    // Unavailable with a Retry-After beyond the budget: one call per invoice per run.
    let app = spawn_app_with(
        backend,
        |p| {
            p.faults.unavailable_rate = 1.0;
            p.faults.retry_after_secs = 30;
        },
        |a| a.retry_max_elapsed = Duration::from_secs(1),
    )
    .await;
    let id = text(&app.create_invoice("C001", 100, "EUR").await, "id").to_owned();
    let other = text(&app.create_invoice("C001", 101, "EUR").await, "id").to_owned();
    const RUNS: usize = 5;
    for _ in 0..RUNS {
        let report = app.pay().await;
        assert_eq!(report["summary"]["retry_later"], 2, "{report}");
    }

    let (paged, sizes) = all_attempts(&app, &id, 2).await;
    assert_eq!(sizes, [2, 2, 1]);
    let (whole, one) = all_attempts(&app, &id, 1000).await;
    assert_eq!(one, [RUNS]);
    assert_eq!(paged, whole);

    // The audit trail's own record of the invoice, in the order the calls started.
    let pool = db::pool(&app.config.database_url, 1);
    let lookup = id.clone();
    let recorded = db::run(&pool, move |c| db::attempts::for_invoice(c, &lookup))
        .await
        .expect("attempts");
    let ids = |items: &[Value]| -> Vec<String> {
        items.iter().map(|a| text(a, "id").to_owned()).collect()
    };
    let recorded_ids: Vec<String> = recorded.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(ids(&paged), recorded_ids);
    for attempt in &paged {
        assert_eq!(attempt["idempotency_key"], format!("invoice-{id}"));
        assert_eq!(attempt["outcome"], "retryable", "{attempt}");
        assert_eq!(attempt["http_status"], 503);
        assert_eq!(attempt["provider_code"], Value::Null);
    }
    let (theirs, _) = all_attempts(&app, &other, 2).await;
    assert_eq!(theirs.len(), RUNS);
    assert!(
        ids(&theirs).iter().all(|a| !recorded_ids.contains(a)),
        "{theirs:?}"
    );

    // A cursor past the last attempt: an empty last page.
    let last = recorded_ids.last().expect("attempts");
    let (status, page) = app
        .get_json(&format!("/invoices/{id}/attempts?cursor={last}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(page, json!({"items": [], "next_cursor": null}));
}

/// An unknown invoice is a 404, a bad limit or cursor a 400, as for `/invoices`.
async fn unknown_invoices_and_bad_queries_are_refused(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await;
    let id = text(&app.create_invoice("C001", 100, "EUR").await, "id").to_owned();
    let get = |path: String| {
        let request = app.client.get(app.url(&path));
        async move { request.send().await.expect("sent") }
    };
    for unknown in [
        "0195b4c0-7a10-7000-8000-000000000002",
        "not%20an%20id",
        "%C3%A9",
    ] {
        let response = get(format!("/invoices/{unknown}/attempts")).await;
        assert_problem(response, 404, "not_found").await;
    }
    for query in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=ten",
        "cursor=",
        "cursor=not%20a%20cursor",
        "cursor=%00",
    ] {
        let response = get(format!("/invoices/{id}/attempts?{query}")).await;
        let problem = assert_problem(response, 400, "invalid_request").await;
        assert!(problem["detail"].is_string(), "{query}: {problem}");
    }
    let (status, _) = app
        .get_json(&format!("/invoices/{id}/attempts?limit=1000"))
        .await;
    assert_eq!(status, 200);
}

/// The `provider_code` of declines recorded before its column, taken from their detail by
/// the migration that adds it; other outcomes get none. An attempt whose run row is
/// missing is listed all the same, with no trigger.
async fn declines_recorded_before_the_code_column_get_their_code(backend: Backend) {
    const MIGRATION: &str = "2026-12-08-000006_attempt_provider_code";
    let db = TestDb::create(backend, Service::InvoiceApp);
    let pool = db::pool(&db_url(&db), 1);
    let new = invoice_app::domain::NewInvoice::parse(
        api_contract::CustomerId::parse("C001").expect("id"),
        money(100, Currency::Eur),
        None,
    )
    .expect("valid");
    let created = invoices::create(&pool, vec![new]).await.expect("created");
    let id = created[0].id.as_str().to_owned();
    let rows = id.clone();
    let ran = db::run(&pool, move |c| -> anyhow::Result<usize> {
        let dir = test_support::repo_root().join("crates/invoice-app/migrations");
        let migrations = FileBasedMigrations::from_path(&dir)?;
        match c {
            AnyConnection::Postgresql(pg) => revert(pg, &migrations, MIGRATION)?,
            AnyConnection::Sqlite(sqlite) => revert(sqlite, &migrations, MIGRATION)?,
        }
        let attempt = |n: u8, run: &str, outcome: &str, status: &str, detail: &str| {
            format!(
                "INSERT INTO payment_attempts (id, invoice_id, pay_run_id, idempotency_key, \
                 outcome, http_status, detail, started_at, finished_at, sent) \
                 VALUES ('a-{n}', '{rows}', '{run}', 'invoice-{rows}', '{outcome}', {status}, \
                 '{detail}', '2026-12-01 00:00:0{n}', '2026-12-01 00:00:0{n}', 'yes')"
            )
        };
        for sql in [
            "INSERT INTO pay_runs (id, trigger, status, paid, failed, retry_later, started_at) \
             VALUES ('r-1', 'cli', 'completed', 0, 0, 0, '2026-12-01 00:00:00')"
                .to_owned(),
            attempt(
                1,
                "r-1",
                "declined",
                "402",
                "insufficient_funds: the account cannot cover the charge",
            ),
            attempt(
                2,
                "r-1",
                "declined",
                "402",
                "account_closed: the account is closed",
            ),
            attempt(
                3,
                "r-1",
                "retryable",
                "503",
                "HTTP 503: try_again_later: later",
            ),
            attempt(
                4,
                "r-1",
                "attention",
                "422",
                "HTTP 422 idempotency_key_reused: held",
            ),
            attempt(
                5,
                "no-such-run",
                "declined",
                "404",
                "customer_not_found: no customer",
            ),
        ] {
            diesel::sql_query(sql).execute(c)?;
        }
        db::migrate(c)
    })
    .await
    .expect("migrated");
    assert_eq!(ran, 1, "only the reverted migration runs again");

    let page = invoices::attempts(
        &pool,
        InvoiceId::parse(id.as_str()).expect("id"),
        AttemptQuery::new(None, None).expect("query"),
    )
    .await
    .expect("read")
    .expect("the invoice");
    let seen: Vec<_> = page
        .items
        .iter()
        .map(|a| {
            (
                a.id.to_string(),
                a.provider_code.clone(),
                a.trigger.map(|t| t.as_str()),
            )
        })
        .collect();
    let code = |c: &str| Some(c.to_owned());
    assert_eq!(
        seen,
        [
            ("a-1".to_owned(), code("insufficient_funds"), Some("cli")),
            ("a-2".to_owned(), code("account_closed"), Some("cli")),
            ("a-3".to_owned(), None, Some("cli")),
            ("a-4".to_owned(), None, Some("cli")),
            ("a-5".to_owned(), code("customer_not_found"), None),
        ]
    );
}

/// Reverts the migration `name` of `source` (and only it).
fn revert<C>(conn: &mut C, source: &FileBasedMigrations, name: &str) -> anyhow::Result<()>
where
    C: MigrationHarness<C::Backend> + diesel::Connection,
    FileBasedMigrations: MigrationSource<C::Backend>,
{
    let all =
        MigrationSource::<C::Backend>::migrations(source).map_err(|e| anyhow::anyhow!("{e}"))?;
    let migration = all
        .iter()
        .find(|m| m.name().to_string() == name)
        .ok_or_else(|| anyhow::anyhow!("no migration {name}"))?;
    conn.revert_migration(migration.as_ref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

both_backends!(
    a_soft_decline_and_the_paid_retry_show_in_order,
    the_attempts_come_a_page_at_a_time,
    unknown_invoices_and_bad_queries_are_refused,
    declines_recorded_before_the_code_column_get_their_code,
);
