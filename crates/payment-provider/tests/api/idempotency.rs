//! Replays, reused keys, in-flight keys: one debit per key whatever arrives twice.

use std::time::Duration;

use crate::helpers::{Backend, assert_problem, charge_body, eur, spawn_app, spawn_app_with};
use api_contract::ChargeResponse;
use test_support::both_backends;

async fn replay_returns_stored_charge_without_second_debit(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(10_000)).await;
    let body = charge_body("inv-1", "C001", 1215, "EUR");

    let first = app.charge("key-1", &body).await;
    assert_eq!(first.status().as_u16(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: ChargeResponse = first.json().await.expect("charge");

    let second = app.charge("key-1", &body).await;
    assert_eq!(second.status().as_u16(), 200);
    assert_eq!(
        second
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let second: ChargeResponse = second.json().await.expect("charge");

    assert_eq!(first, second);
    assert_eq!(app.provider.balance("C001").await, Some(10_000 - 1215));
    assert_eq!(app.provider.ledger().await.len(), 1);
}

async fn replayed_decline_stays_a_decline(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(100)).await;
    let body = charge_body("inv-1", "C001", 500, "EUR");
    assert_problem(app.charge("key-1", &body).await, 402, "insufficient_funds").await;

    // Money arrives, but the key's answer is final: a retry can't become a second attempt.
    app.provider.set_balance("C001", 100_000).await;
    let replay = app.charge("key-1", &body).await;
    assert_eq!(
        replay
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_problem(replay, 402, "insufficient_funds").await;
    assert!(app.provider.ledger().await.is_empty());
}

async fn same_key_other_body_is_422(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(10_000)).await;
    assert_eq!(
        app.charge("key-1", &charge_body("inv-1", "C001", 100, "EUR"))
            .await
            .status()
            .as_u16(),
        201
    );
    let other = app
        .charge("key-1", &charge_body("inv-1", "C001", 999, "EUR"))
        .await;
    assert_problem(other, 422, "idempotency_key_reused").await;
    assert_eq!(app.provider.balance("C001").await, Some(10_000 - 100));
}

async fn concurrent_same_key_debits_once(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(100_000)).await;
    let app = std::sync::Arc::new(app);
    let body = charge_body("inv-1", "C001", 700, "EUR");
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let (app, body) = (app.clone(), body.clone());
            tokio::spawn(async move { app.charge("same-key", &body).await.status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 201, 409].contains(s)),
        "{statuses:?}"
    );
    assert_eq!(app.provider.balance("C001").await, Some(100_000 - 700));
    assert_eq!(app.provider.ledger().await.len(), 1);
}

async fn key_in_flight_is_409(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.faults.latency = Duration::from_millis(800)).await;
    app.provider.fund("C001", eur(10_000)).await;
    let app = std::sync::Arc::new(app);
    let body = charge_body("inv-1", "C001", 100, "EUR");
    let slow = {
        let (app, body) = (app.clone(), body.clone());
        tokio::spawn(async move { app.charge("key-1", &body).await.status().as_u16() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_problem(
        app.charge("key-1", &body).await,
        409,
        "idempotency_key_in_flight",
    )
    .await;
    assert_eq!(slow.await.expect("task"), 201);
    assert_eq!(app.charge("key-1", &body).await.status().as_u16(), 200);
    assert_eq!(app.provider.balance("C001").await, Some(10_000 - 100));
}

/// A request that stalls past IDEMPOTENCY_STALE_SECS loses its key to a retry; when it
/// wakes up, its debit must roll back (409), and the retry's is the only one.
async fn stalled_request_loses_its_stale_claim_and_charges_nothing(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        // Wide margins: the first request may reach its claim late on a loaded machine.
        c.faults.latency = Duration::from_millis(3000);
        c.stale_claim_after = Duration::from_secs(1);
    })
    .await;
    app.provider.fund("C001", eur(10_000)).await;
    let app = std::sync::Arc::new(app);
    let body = charge_body("inv-1", "C001", 100, "EUR");
    let stalled = {
        let (app, body) = (app.clone(), body.clone());
        tokio::spawn(async move { app.charge("key-1", &body).await })
    };
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let retry = app.charge("key-1", &body).await;
    assert_problem(
        stalled.await.expect("task"),
        409,
        "idempotency_key_in_flight",
    )
    .await;
    assert_eq!(retry.status().as_u16(), 201, "the retry took the key over");
    assert_eq!(app.provider.balance("C001").await, Some(10_000 - 100));
    assert_eq!(app.provider.ledger().await.len(), 1);
    assert_eq!(app.charge("key-1", &body).await.status().as_u16(), 200);
}

/// Two replicas on one database: a request stalled on the first loses its stale key to a
/// retry on the second, which charges at once. When the stalled one wakes, the charge is
/// already made: it answers the contract's 409 (a retry replays), never a 500 from the
/// ledger's unique key.
async fn stalled_request_finishing_second_on_another_replica_answers_409(backend: Backend) {
    use payment_provider::auth::CallerTokens;
    use payment_provider::config::{Config, Seed};
    use payment_provider::startup::Application;
    let stale = Duration::from_secs(1);
    let app = spawn_app_with(backend, |c| {
        c.faults.latency = Duration::from_millis(3000);
        c.stale_claim_after = stale;
    })
    .await;
    let mut config = Config::from_lookup(&|_| None).expect("defaults");
    config.listen_addr = ([127, 0, 0, 1], 0).into();
    config.metrics_addr = ([127, 0, 0, 1], 0).into();
    config.database_url = app.provider.database_url();
    config.pool_size = config.database_url.default_pool_size();
    config.seed = Seed::None;
    config.stale_claim_after = stale;
    config.callers =
        Some(CallerTokens::parse(&format!("invoice-app:{}", app.provider.token)).expect("token"));
    let replica = Application::build(config)
        .await
        .expect("second replica starts");
    let replica_url = format!("http://127.0.0.1:{}/v1/charges", replica.port());
    tokio::spawn(replica.run_until_stopped());

    app.provider.fund("C001", eur(10_000)).await;
    let app = std::sync::Arc::new(app);
    let body = charge_body("inv-1", "C001", 100, "EUR");
    let stalled = {
        let (app, body) = (app.clone(), body.clone());
        tokio::spawn(async move { app.charge("key-1", &body).await })
    };
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let retry = app
        .client
        .post(&replica_url)
        .bearer_auth(&app.provider.token)
        .header("Idempotency-Key", "key-1")
        .json(&body)
        .send()
        .await
        .expect("retry sent");
    assert_eq!(
        retry.status().as_u16(),
        201,
        "the other replica took the key over"
    );
    assert_problem(
        stalled.await.expect("task"),
        409,
        "idempotency_key_in_flight",
    )
    .await;
    assert_eq!(app.provider.ledger().await.len(), 1);
    assert_eq!(app.provider.balance("C001").await, Some(10_000 - 100));
    assert_eq!(app.charge("key-1", &body).await.status().as_u16(), 200);
}

async fn injected_unavailability_charges_nothing_and_retry_succeeds(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.faults.unavailable_rate = 1.0;
        c.faults.retry_after_secs = 2;
    })
    .await;
    app.provider.fund("C001", eur(10_000)).await;
    let response = app
        .charge("key-1", &charge_body("inv-1", "C001", 100, "EUR"))
        .await;
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    assert_problem(response, 503, "service_unavailable").await;
    assert!(app.provider.ledger().await.is_empty());
    assert_eq!(app.provider.balance("C001").await, Some(10_000));
}

/// A key stored by a release that fingerprinted the re-serialised JSON still replays: an
/// upgrade must not turn a charged invoice's retry into a key conflict.
async fn key_stored_with_the_earlier_fingerprint_still_replays(backend: Backend) {
    use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
    use payment_provider::db::{self, schema::idempotency_keys::dsl};
    use sha2::{Digest, Sha256};
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(10_000)).await;
    let body = charge_body("inv-1", "C001", 1215, "EUR");
    assert_eq!(app.charge("key-1", &body).await.status().as_u16(), 201);
    // Rewrite the stored fingerprint the way earlier releases computed it.
    let legacy = hex::encode(Sha256::digest(
        r#"{"invoice_id":"inv-1","customer_id":"C001","amount":{"minor_units":1215,"currency":"EUR"}}"#,
    ));
    let updated = db::run(&app.provider.pool, move |c| {
        diesel::update(dsl::idempotency_keys.filter(dsl::idempotency_key.eq("key-1")))
            .set(dsl::request_hash.eq(legacy))
            .execute(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("rewritten");
    assert_eq!(updated, 1);

    let replay = app.charge("key-1", &body).await;
    assert_eq!(
        replay.status().as_u16(),
        200,
        "replayed, not a key conflict"
    );
    assert_problem(
        app.charge("key-1", &charge_body("inv-1", "C001", 1216, "EUR"))
            .await,
        422,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(app.provider.ledger().await.len(), 1);
    assert_eq!(app.provider.balance("C001").await, Some(10_000 - 1215));
}

/// `FAULT_RATE_LIMITED_RATE`: the 429 invoice-app must handle, which the pact checks too.
async fn injected_rate_limit_is_429_with_retry_after_and_charges_nothing(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.faults.rate_limited_rate = 1.0;
        c.faults.retry_after_secs = 2;
    })
    .await;
    app.provider.fund("C001", eur(10_000)).await;
    let response = app
        .charge("key-1", &charge_body("inv-1", "C001", 100, "EUR"))
        .await;
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    assert_problem(response, 429, "rate_limited").await;
    assert!(app.provider.ledger().await.is_empty());
    assert_eq!(app.provider.balance("C001").await, Some(10_000));
}

both_backends!(
    key_stored_with_the_earlier_fingerprint_still_replays,
    replay_returns_stored_charge_without_second_debit,
    replayed_decline_stays_a_decline,
    same_key_other_body_is_422,
    concurrent_same_key_debits_once,
    key_in_flight_is_409,
    stalled_request_loses_its_stale_claim_and_charges_nothing,
    stalled_request_finishing_second_on_another_replica_answers_409,
    injected_unavailability_charges_nothing_and_retry_succeeds,
    injected_rate_limit_is_429_with_retry_after_and_charges_nothing,
);
