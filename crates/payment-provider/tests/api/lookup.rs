//! `GET /v1/charges?idempotency_key=<key>`: what a key holds, read as its replay, for the
//! caller who used it only; it charges nothing. Each test reads the ledger too.

use std::time::Duration;

use api_contract::ChargeResponse;
use payment_provider::auth::CallerTokens;
use test_support::{TEST_TOKEN, both_backends};

use crate::helpers::{
    Backend, TestApp, assert_problem, assert_replayed, charge_body, eur, spawn_app_with,
};

const OTHER: &str = "token-of-another-caller-0123456789";

impl TestApp {
    /// A lookup of `key` with `token`.
    async fn look_up_as(&self, token: &str, key: &str) -> reqwest::Response {
        self.client
            .get(self.url("/v1/charges"))
            .query(&[("idempotency_key", key)])
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }
}

/// invoice-app and a second caller, `other`.
async fn two_callers(backend: Backend) -> TestApp {
    let callers = CallerTokens::parse(&format!("invoice-app:{TEST_TOKEN},other:{OTHER}"))
        .expect("valid tokens");
    spawn_app_with(backend, |c| c.callers = Some(callers)).await
}

/// A charged key reads as the charge (200, replayed); a declined one as its decline; and
/// neither read charges or debits anything.
async fn a_key_reads_as_its_replay(backend: Backend) {
    let app = two_callers(backend).await;
    app.provider.fund("C001", eur(2000)).await;
    let made = app
        .charge("key-1", &charge_body("inv-1", "C001", 1215, "EUR"))
        .await;
    assert_eq!(made.status().as_u16(), 201);
    let made: ChargeResponse = made.json().await.expect("charge");
    let declined = app
        .charge("key-2", &charge_body("inv-2", "C001", 1215, "EUR"))
        .await;
    assert_eq!(declined.status().as_u16(), 402);

    for _ in 0..2 {
        let found = app.look_up_as(TEST_TOKEN, "key-1").await;
        assert_eq!(found.status().as_u16(), 200);
        assert_replayed(&found);
        let found: ChargeResponse = found.json().await.expect("charge");
        assert_eq!(found, made);
        let decline = app.look_up_as(TEST_TOKEN, "key-2").await;
        assert_replayed(&decline);
        assert_problem(decline, 402, "insufficient_funds").await;
    }
    assert_problem(
        app.look_up_as(TEST_TOKEN, "key-3").await,
        404,
        "key_not_found",
    )
    .await;
    let ledger = app.provider.ledger().await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(app.provider.balance("C001").await, Some(2000 - 1215));
}

/// Keys belong to their caller: another caller's key reads as never used, whatever it
/// holds, and the same key is each caller's own charge.
async fn another_callers_key_reads_as_not_found(backend: Backend) {
    let app = two_callers(backend).await;
    app.provider.fund("C001", eur(10_000)).await;
    let body = charge_body("inv-1", "C001", 1215, "EUR");
    assert_eq!(
        app.charge_as(OTHER, "shared-key", &body)
            .await
            .status()
            .as_u16(),
        201
    );

    assert_problem(
        app.look_up_as(TEST_TOKEN, "shared-key").await,
        404,
        "key_not_found",
    )
    .await;
    assert_eq!(
        app.look_up_as(OTHER, "shared-key").await.status().as_u16(),
        200
    );
    // invoice-app's own charge under that key is a first charge, not the other's replay.
    assert_eq!(app.charge("shared-key", &body).await.status().as_u16(), 201);
    let ledger = app.provider.ledger().await;
    let mut callers: Vec<&str> = ledger.iter().map(|c| c.caller.as_str()).collect();
    callers.sort_unstable();
    assert_eq!(callers, ["invoice-app", "other"]);
}

/// A key whose request is still being processed has no answer yet (409), and a lookup
/// meanwhile does not keep the charge from completing once.
async fn a_key_in_flight_is_409(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.faults.latency = Duration::from_millis(1500);
    })
    .await;
    app.provider.fund("C001", eur(10_000)).await;
    let charging = tokio::spawn({
        let (client, url, token) = (
            app.client.clone(),
            app.url("/v1/charges"),
            app.provider.token.clone(),
        );
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", "slow-key")
                .json(&charge_body("inv-1", "C001", 1215, "EUR"))
                .send()
                .await
                .expect("sent")
                .status()
                .as_u16()
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_problem(
        app.look_up_as(TEST_TOKEN, "slow-key").await,
        409,
        "idempotency_key_in_flight",
    )
    .await;
    assert_eq!(charging.await.expect("charge"), 201);
    assert_eq!(
        app.look_up_as(TEST_TOKEN, "slow-key")
            .await
            .status()
            .as_u16(),
        200
    );
    assert_eq!(app.provider.ledger().await.len(), 1);
}

/// The caller's mistakes are 4xx with their codes, never a lookup of something else.
async fn a_bad_lookup_is_refused(backend: Backend) {
    let app = two_callers(backend).await;
    assert_problem(
        app.look_up_as("no-such-token-000000000000", "k").await,
        401,
        "unauthorized",
    )
    .await;
    let bare = app
        .client
        .get(app.url("/v1/charges"))
        .bearer_auth(TEST_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_problem(bare, 400, "missing_idempotency_key").await;
    assert_problem(
        app.look_up_as(TEST_TOKEN, "has space").await,
        400,
        "invalid_idempotency_key",
    )
    .await;
    let twice = app
        .client
        .get(app.url("/v1/charges?idempotency_key=a&idempotency_key=b"))
        .bearer_auth(TEST_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_problem(twice, 400, "malformed_request").await;
    let put = app
        .client
        .put(app.url("/v1/charges"))
        .bearer_auth(TEST_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(put.status().as_u16(), 405);
    assert_eq!(
        put.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, HEAD, POST")
    );
}

both_backends!(
    a_key_reads_as_its_replay,
    another_callers_key_reads_as_not_found,
    a_key_in_flight_is_409,
    a_bad_lookup_is_refused,
);
