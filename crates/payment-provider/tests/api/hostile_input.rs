//! Bad input gets a 4xx problem+json: never a 500, a panic or a charge.

use crate::helpers::{Backend, TestApp, assert_problem, eur, spawn_app};
use test_support::TEST_TOKEN;
use test_support::both_backends;

async fn post_raw(
    app: &TestApp,
    key: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/v1/charges"))
        .bearer_auth(TEST_TOKEN)
        .header("content-type", content_type)
        .body(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("sent")
}

async fn bad_bodies_are_rejected_cleanly(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(1_000_000)).await;
    let json = "application/json";
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", b"{\"invoice_id\": ".to_vec(), 400, "malformed_request"),
        ("not JSON at all", b"hello".to_vec(), 400, "malformed_request"),
        ("empty body", Vec::new(), 400, "malformed_request"),
        ("wrong shape", b"[1,2,3]".to_vec(), 422, "invalid_request"),
        ("missing amount", br#"{"invoice_id":"i","customer_id":"C001"}"#.to_vec(), 422, "invalid_request"),
        (
            "negative amount",
            br#"{"invoice_id":"i","customer_id":"C001","amount":{"minor_units":-5,"currency":"EUR"}}"#.to_vec(),
            422,
            "invalid_request",
        ),
        (
            "zero amount",
            br#"{"invoice_id":"i","customer_id":"C001","amount":{"minor_units":0,"currency":"EUR"}}"#.to_vec(),
            422,
            "invalid_request",
        ),
        (
            "huge amount",
            br#"{"invoice_id":"i","customer_id":"C001","amount":{"minor_units":99999999999999999999,"currency":"EUR"}}"#.to_vec(),
            422,
            "invalid_request",
        ),
        (
            "float amount",
            br#"{"invoice_id":"i","customer_id":"C001","amount":{"minor_units":12.15,"currency":"EUR"}}"#.to_vec(),
            422,
            "invalid_request",
        ),
        (
            "unknown currency",
            br#"{"invoice_id":"i","customer_id":"C001","amount":{"minor_units":5,"currency":"XYZ"}}"#.to_vec(),
            422,
            "invalid_request",
        ),
        (
            "bad customer id",
            br#"{"invoice_id":"i","customer_id":"C 001; drop","amount":{"minor_units":5,"currency":"EUR"}}"#.to_vec(),
            422,
            "invalid_request",
        ),
        (
            "invalid UTF-8",
            b"{\"invoice_id\":\"\xff\xfe\",\"customer_id\":\"C001\"}".to_vec(),
            400,
            "malformed_request",
        ),
    ];
    for (what, body, status, code) in cases {
        let response = post_raw(&app, Some("k1"), json, body).await;
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_problem(response, status, code).await;
    }
    assert!(app.provider.ledger().await.is_empty());
}

async fn oversize_and_wrong_media_type_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let ten_mb = vec![b' '; 10 * 1024 * 1024];
    assert_problem(
        post_raw(&app, Some("k1"), "application/json", ten_mb).await,
        413,
        "payload_too_large",
    )
    .await;
    let form = b"invoice_id=1".to_vec();
    assert_problem(
        post_raw(&app, Some("k1"), "application/x-www-form-urlencoded", form).await,
        415,
        "unsupported_media_type",
    )
    .await;
}

async fn idempotency_key_must_be_present_once_and_valid(backend: Backend) {
    let app = spawn_app(backend).await;
    let body =
        br#"{"invoice_id":"i","customer_id":"C001","amount":{"minor_units":5,"currency":"EUR"}}"#
            .to_vec();
    assert_problem(
        post_raw(&app, None, "application/json", body.clone()).await,
        400,
        "missing_idempotency_key",
    )
    .await;
    let long = "k".repeat(256);
    assert_problem(
        post_raw(&app, Some(&long), "application/json", body.clone()).await,
        400,
        "invalid_idempotency_key",
    )
    .await;
    let twice = app
        .client
        .post(app.url("/v1/charges"))
        .bearer_auth(TEST_TOKEN)
        .header("content-type", "application/json")
        .header("Idempotency-Key", "a")
        .header("Idempotency-Key", "b")
        .body(body.clone())
        .send()
        .await
        .expect("sent");
    assert_problem(twice, 400, "invalid_idempotency_key").await;
    let non_ascii = app
        .client
        .post(app.url("/v1/charges"))
        .bearer_auth(TEST_TOKEN)
        .header("content-type", "application/json")
        .header(
            "Idempotency-Key",
            reqwest::header::HeaderValue::from_bytes(b"\xe2\x9c\x93").expect("header"),
        )
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_problem(non_ascii, 400, "invalid_idempotency_key").await;
}

async fn unknown_routes_and_methods_are_problems(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_problem(app.get("/nope").await, 404, "not_found").await;
    let wrong_method = app
        .client
        .delete(app.url("/v1/charges"))
        .bearer_auth(&app.provider.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        wrong_method
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok()),
        Some("GET, HEAD, POST"),
        "a 405 names the methods that work"
    );
    assert_problem(wrong_method, 405, "method_not_allowed").await;
    let health = app
        .client
        .put(app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_problem(health, 405, "method_not_allowed").await;
    // A NUL byte once reached PostgreSQL, which answered with an error (a 500).
    for path in [
        "/v1/charges/ch_doesnotexist",
        "/v1/charges/ch%00x",
        "/v1/accounts/bad%20id",
        "/v1/accounts/C%00",
    ] {
        assert_problem(app.get(path).await, 404, "not_found").await;
    }
    app.provider.fund("C001", eur(100)).await;
    let head = app
        .client
        .head(app.url("/v1/accounts/C001"))
        .bearer_auth(&app.provider.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(head.status().as_u16(), 200, "HEAD is answered like GET");
    assert!(head.bytes().await.expect("body").is_empty());
}

both_backends!(
    bad_bodies_are_rejected_cleanly,
    oversize_and_wrong_media_type_are_refused,
    idempotency_key_must_be_present_once_and_valid,
    unknown_routes_and_methods_are_problems,
);
