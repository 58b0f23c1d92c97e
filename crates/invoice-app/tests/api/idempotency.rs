//! `POST /invoices` with an `Idempotency-Key`: a retry of the same request by the same client
//! gets the first answer and creates nothing; the key with another request is a 422; racing
//! requests with one key create one invoice; another client's key is another request. The
//! invoices are counted in the database, not only through the API.

use std::time::Duration;

use api_contract::Currency;
use diesel::connection::SimpleConnection;
use invoice_app::auth::ApiKeys;
use invoice_app::db::{self, DbError};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{
    Backend, TestApp, assert_problem, money, second_instance, spawn_app, spawn_app_with,
};
use test_support::both_backends;

/// Two clients that may both create and read invoices.
const SHOP_KEY: &str = "shop-key-5c0e8a2f7d1b9346";
const CRM_KEY: &str = "crm-key-81f4d6a09c3e27b5";

fn may_create(client: &str, key: &str) -> Value {
    json!({"client": client, "scopes": ["invoices:write", "invoices:read"], "sha256": hex::encode(Sha256::digest(key))})
}

async fn spawn_with_two_clients(backend: Backend) -> TestApp {
    let keys = json!([may_create("shop", SHOP_KEY), may_create("crm", CRM_KEY)]).to_string();
    spawn_app_with(
        backend,
        |_| {},
        |c| c.auth.api_keys = Some(ApiKeys::parse(&keys).expect("valid API keys")),
    )
    .await
}

fn may(minor: i64) -> Value {
    json!({"customer_id": "C001", "amount": {"minor_units": minor, "currency": "EUR"}, "description": "May"})
}

/// `POST /invoices` with `key` (when given) as `credential` (the dev key when `None`).
async fn create(
    app: &TestApp,
    credential: Option<&str>,
    key: Option<&str>,
    body: &str,
) -> reqwest::Response {
    create_at(&app.client, &app.base_url, credential, key, body).await
}

/// As [`create`], at the invoice-app serving `base`.
async fn create_at(
    client: &reqwest::Client,
    base: &str,
    credential: Option<&str>,
    key: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut request = client
        .post(format!("{base}/invoices"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("sent")
}

/// A 201's Location, whether it was replayed, and its body.
async fn created(response: reqwest::Response) -> (String, bool, Value) {
    assert_eq!(response.status().as_u16(), 201, "created");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let location = header("location").expect("Location");
    let replayed = match header("idempotent-replayed").as_deref() {
        None => false,
        Some("true") => true,
        Some(other) => panic!("Idempotent-Replayed: {other}"),
    };
    (location, replayed, response.json().await.expect("invoice"))
}

/// Invoices and idempotency keys in the app's database.
async fn stored(app: &TestApp) -> (i64, i64) {
    let pool = db::pool(&app.config.database_url, 1);
    db::run(&pool, |c| {
        Ok::<_, DbError>((db::invoices::count(c)?, db::idempotency_keys::count(c)?))
    })
    .await
    .expect("counted")
}

async fn the_same_key_and_request_replay_the_first_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = may(1215).to_string();
    let (location, replayed, first) =
        created(create(&app, None, Some("order-17"), &body).await).await;
    assert!(!replayed, "the first answer is no replay");
    // The same request, written differently: the fingerprint is of the invoice, not the JSON.
    let rewritten = r#"{ "description": "May", "amount": {"currency": "EUR", "minor_units": 1215.0}, "customer_id": "C001" }"#;
    for body in [body.as_str(), rewritten] {
        let (again, replayed, answer) =
            created(create(&app, None, Some("order-17"), body).await).await;
        assert!(replayed, "a retry is flagged Idempotent-Replayed: true");
        assert_eq!(
            (&again, &answer),
            (&location, &first),
            "the first answer, as it was"
        );
    }
    assert_eq!(stored(&app).await, (1, 1), "one invoice, one key");

    // Replayed as first given, even after the invoice changed.
    app.provider()
        .fund("C001", money(5_000, Currency::Eur))
        .await;
    app.pay().await;
    let (_, paid) = app.get_json(&location).await;
    assert_eq!(paid["status"], "paid");
    let (_, replayed, answer) = created(create(&app, None, Some("order-17"), &body).await).await;
    assert!(replayed);
    assert_eq!(answer, first);
    assert_eq!(answer["status"], "pending");
    assert_eq!(stored(&app).await, (1, 1));
}

async fn the_same_key_with_another_request_is_refused(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await;
    let (location, _, first) =
        created(create(&app, None, Some("k-1"), &may(1215).to_string()).await).await;
    let other_amount = may(1216).to_string();
    let no_description =
        json!({"customer_id": "C001", "amount": {"minor_units": 1215, "currency": "EUR"}})
            .to_string();
    let other_customer = json!({"customer_id": "C002", "amount": {"minor_units": 1215, "currency": "EUR"}, "description": "May"}).to_string();
    for body in [&other_amount, &no_description, &other_customer] {
        let problem = assert_problem(
            create(&app, None, Some("k-1"), body).await,
            422,
            "idempotency_key_reused",
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("new key")),
            "{problem}"
        );
    }
    assert_eq!(
        stored(&app).await,
        (1, 1),
        "nothing created by a refused request"
    );
    // The key still answers its own request.
    let (again, replayed, answer) =
        created(create(&app, None, Some("k-1"), &may(1215).to_string()).await).await;
    assert!(replayed);
    assert_eq!((again, answer), (location, first));
}

/// Holds the database's write lock until the returned sender is used (PostgreSQL: a lock
/// on `invoices` that every insert into it waits for; SQLite: the one writer's lock), so
/// requests sent meanwhile all find no key and then meet at the insert.
async fn hold_inserts(app: &TestApp) -> std::sync::mpsc::Sender<()> {
    let pool = db::pool(&app.config.database_url, 1);
    let (locked, is_locked) = tokio::sync::oneshot::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let mut conn = pool.get().expect("connection");
        let lock = match &mut *conn {
            db::AnyConnection::Postgresql(_) => {
                "BEGIN; LOCK TABLE invoices IN SHARE ROW EXCLUSIVE MODE;"
            }
            db::AnyConnection::Sqlite(_) => "BEGIN IMMEDIATE;",
        };
        conn.batch_execute(lock).expect("locked");
        locked.send(()).ok();
        released.recv().ok();
        conn.batch_execute("COMMIT;").expect("released");
    });
    is_locked.await.expect("lock taken");
    release
}

async fn racing_requests_with_one_key_create_one_invoice(backend: Backend) {
    let app = spawn_app(backend).await;
    // Two replicas, so that on SQLite too (one connection per process) requests race.
    let (second, second_url, served) = second_instance(&app).await;
    let body = may(4242).to_string();
    let release = hold_inserts(&app).await;
    let requests: Vec<_> = (0..12)
        .map(|i| {
            let (client, body) = (app.client.clone(), body.clone());
            let base = if i % 2 == 0 {
                app.base_url.clone()
            } else {
                second_url.clone()
            };
            tokio::spawn(async move {
                create_at(&client, &base, None, Some("timed-out-create"), &body).await
            })
        })
        .collect();
    // Every request has looked for the key by now, found none, and waits to insert.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    release.send(()).expect("lock holder waits");
    let mut fresh = 0;
    let mut ids = std::collections::BTreeSet::new();
    for request in requests {
        let (_, replayed, invoice) = created(request.await.expect("request task")).await;
        fresh += usize::from(!replayed);
        ids.insert(invoice["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), 1, "every answer names the same invoice: {ids:?}");
    assert_eq!(
        fresh, 1,
        "exactly one request created it, the others replayed"
    );
    assert_eq!(stored(&app).await, (1, 1), "one invoice in the database");
    // Paid once: 4,242 debited, not 8,484.
    app.provider()
        .fund("C001", money(10_000, Currency::Eur))
        .await;
    app.pay().await;
    assert_eq!(app.invoices("paid").await.len(), 1);
    second.stop(true).await;
    served.await.expect("joined").expect("served");
}

async fn keys_belong_to_the_client(backend: Backend) {
    let app = spawn_with_two_clients(backend).await;
    let body = may(1215).to_string();
    let (shop_at, replayed, shop) =
        created(create(&app, Some(SHOP_KEY), Some("order-1"), &body).await).await;
    assert!(!replayed);
    let (crm_at, replayed, crm) =
        created(create(&app, Some(CRM_KEY), Some("order-1"), &body).await).await;
    assert!(!replayed, "another client's key is another request");
    assert_ne!(shop_at, crm_at);
    assert_eq!(shop["created_by"], "key:shop");
    assert_eq!(crm["created_by"], "key:crm");
    // Another client's body under the same key is no conflict either.
    let (_, replayed, _) =
        created(create(&app, Some(CRM_KEY), Some("order-2"), &may(1).to_string()).await).await;
    assert!(!replayed);
    let (_, replayed, _) =
        created(create(&app, Some(SHOP_KEY), Some("order-2"), &may(2).to_string()).await).await;
    assert!(!replayed);
    // Each client's retry replays its own invoice.
    for (credential, location, invoice) in [(SHOP_KEY, &shop_at, &shop), (CRM_KEY, &crm_at, &crm)] {
        let (again, replayed, answer) =
            created(create(&app, Some(credential), Some("order-1"), &body).await).await;
        assert!(replayed);
        assert_eq!((&again, &answer), (location, invoice));
    }
    assert_eq!(stored(&app).await, (4, 4));
}

async fn a_bad_key_is_refused_before_anything_is_created(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await;
    let body = may(1215).to_string();
    let long = "k".repeat(256);
    for key in ["", "has space", long.as_str(), "tab\there"] {
        assert_problem(
            create(&app, None, Some(key), &body).await,
            400,
            "invalid_idempotency_key",
        )
        .await;
    }
    let not_ascii = app
        .client
        .post(app.url("/invoices"))
        .json(&may(1215))
        .header(
            "Idempotency-Key",
            reqwest::header::HeaderValue::from_bytes("ключ".as_bytes()).expect("obs-text"),
        )
        .send()
        .await
        .expect("sent");
    assert_problem(not_ascii, 400, "invalid_idempotency_key").await;
    let twice = app
        .client
        .post(app.url("/invoices"))
        .json(&may(1215))
        .header("Idempotency-Key", "a")
        .header("Idempotency-Key", "a")
        .send()
        .await
        .expect("sent");
    let problem = assert_problem(twice, 400, "invalid_idempotency_key").await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("once")),
        "{problem}"
    );
    assert_eq!(stored(&app).await, (0, 0));
    // The longest key there may be is fine.
    let longest = "k".repeat(255);
    created(create(&app, None, Some(&longest), &body).await).await;
    assert_eq!(stored(&app).await, (1, 1));
}

async fn without_a_key_every_create_is_a_new_invoice(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await;
    let body = may(1215).to_string();
    let (first, replayed, _) = created(create(&app, None, None, &body).await).await;
    assert!(!replayed);
    let (second, replayed, _) = created(create(&app, None, None, &body).await).await;
    assert!(!replayed);
    assert_ne!(first, second);
    assert_eq!(stored(&app).await, (2, 0));
}

async fn keys_past_their_retention_are_pruned(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await;
    for i in 0..5 {
        created(
            create(
                &app,
                None,
                Some(&format!("old-{i}")),
                &may(100 + i).to_string(),
            )
            .await,
        )
        .await;
    }
    let pool = db::pool(&app.config.database_url, 1);
    // Kept for their retention.
    let day = Duration::from_secs(24 * 3600);
    assert_eq!(
        invoice_app::invoices::prune_idempotency_keys(&pool, day)
            .await
            .expect("pruned"),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    // In bounded batches: at most `limit` at a time (none share a timestamp here).
    let before = chrono::Utc::now().naive_utc();
    let batch = db::run(&pool, move |c| {
        db::idempotency_keys::prune(c, before, 2).map_err(DbError::from)
    })
    .await
    .expect("pruned");
    assert_eq!(batch, 2);
    assert_eq!(stored(&app).await, (5, 3));
    assert_eq!(
        invoice_app::invoices::prune_idempotency_keys(&pool, Duration::ZERO)
            .await
            .expect("pruned"),
        3
    );
    assert_eq!(stored(&app).await, (5, 0), "the invoices stay");
    // A pruned key is a new request: another body is no conflict now.
    let (_, replayed, _) =
        created(create(&app, None, Some("old-0"), &may(999).to_string()).await).await;
    assert!(!replayed);
}

both_backends!(
    the_same_key_and_request_replay_the_first_answer,
    the_same_key_with_another_request_is_refused,
    racing_requests_with_one_key_create_one_invoice,
    keys_belong_to_the_client,
    a_bad_key_is_refused_before_anything_is_created,
    without_a_key_every_create_is_a_new_invoice,
    keys_past_their_retention_are_pruned,
);
