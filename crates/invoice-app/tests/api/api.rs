//! The public API: creating, listing, reading invoices; bad input; operations endpoints.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, assert_problem, spawn_app};
use test_support::both_backends;

async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("sent")
}

async fn create_and_read_an_invoice(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await;
    let response = app
        .client
        .post(app.url("/invoices"))
        .json(&json!({"customer_id": "C001", "amount": {"minor_units": 1215, "currency": "EUR"}, "description": "May"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 201);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_owned();
    let created: Value = response.json().await.expect("invoice");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["amount_display"], "12.15 EUR");
    assert_eq!(
        created["amount"],
        json!({"minor_units": 1215, "currency": "EUR"})
    );
    let (status, fetched) = app.get_json(&location).await;
    assert_eq!(status, 200);
    assert_eq!(fetched, created);

    // HEAD answers like GET, without the body.
    let head = app
        .client
        .head(app.url(&location))
        .send()
        .await
        .expect("sent");
    assert_eq!(head.status().as_u16(), 200);
    assert!(head.bytes().await.expect("body").is_empty());

    // A null description is no description, as the OpenAPI document says.
    let response = app
        .client
        .post(app.url("/invoices"))
        .json(&json!({"customer_id": "C001", "amount": {"minor_units": 1, "currency": "EUR"}, "description": null}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 201);
    let created: Value = response.json().await.expect("invoice");
    assert_eq!(created["description"], "");
}

async fn listing_filters_and_pages(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            app.create_invoice("C001", 100 + i, "EUR").await["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let (_, first) = app.get_json("/invoices?status=pending&limit=3").await;
    assert_eq!(first["items"].as_array().expect("items").len(), 3);
    let cursor = first["next_cursor"].as_str().expect("more pages");
    let (_, second) = app
        .get_json(&format!("/invoices?status=pending&limit=3&cursor={cursor}"))
        .await;
    let (_, third) = app
        .get_json(&format!(
            "/invoices?status=pending&limit=3&cursor={}",
            second["next_cursor"].as_str().expect("more")
        ))
        .await;
    assert!(third["next_cursor"].is_null());
    let seen: Vec<String> = [first, second, third]
        .iter()
        .flat_map(|p| p["items"].as_array().expect("items").clone())
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(seen, ids, "every invoice once, in creation order");
    let (_, paid) = app.get_json("/invoices?status=paid").await;
    assert!(paid["items"].as_array().expect("items").is_empty());
}

async fn bad_input_gets_problem_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let json = "application/json";
    let cases: Vec<(&str, &[u8], u16, &str)> = vec![
        ("malformed", b"{\"customer_id\":", 400, "malformed_request"),
        (
            "negative",
            br#"{"customer_id":"C001","amount":{"minor_units":-1,"currency":"EUR"}}"#,
            422,
            "invalid_request",
        ),
        (
            "zero",
            br#"{"customer_id":"C001","amount":{"minor_units":0,"currency":"EUR"}}"#,
            422,
            "invalid_request",
        ),
        (
            "float",
            br#"{"customer_id":"C001","amount":{"minor_units":1.5,"currency":"EUR"}}"#,
            422,
            "invalid_request",
        ),
        (
            "unknown currency",
            br#"{"customer_id":"C001","amount":{"minor_units":1,"currency":"ABC"}}"#,
            422,
            "invalid_request",
        ),
        (
            "bad customer",
            br#"{"customer_id":"","amount":{"minor_units":1,"currency":"EUR"}}"#,
            422,
            "invalid_request",
        ),
        (
            "unknown field",
            br#"{"customer_id":"C001","amount":{"minor_units":1,"currency":"EUR"},"paid":true}"#,
            422,
            "invalid_request",
        ),
    ];
    for (what, body, status, code) in cases {
        let response = post_raw(&app, "/invoices", json, body.to_vec()).await;
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_problem(response, status, code).await;
    }
    let huge = vec![b'x'; 10 * 1024 * 1024];
    assert_problem(
        post_raw(&app, "/invoices", json, huge).await,
        413,
        "payload_too_large",
    )
    .await;
    assert_problem(
        post_raw(&app, "/invoices", "text/plain", b"hi".to_vec()).await,
        415,
        "unsupported_media_type",
    )
    .await;
    for query in [
        "status=unpaid",
        "limit=0",
        "limit=100000",
        "limit=abc",
        "status=PAID",
        // A NUL byte once reached PostgreSQL, which answered with an error (a 500).
        "cursor=a%00b",
        "cursor=%C3%A9",
    ] {
        let response = app
            .client
            .get(app.url(&format!("/invoices?{query}")))
            .send()
            .await
            .expect("sent");
        assert_problem(response, 400, "invalid_request").await;
    }
    for path in [
        "/invoices/nope",
        "/invoices/a%00b",
        "/pay-runs/nope",
        "/pay-runs/a%00b",
    ] {
        let missing = app.client.get(app.url(path)).send().await.expect("sent");
        assert_problem(missing, 404, "not_found").await;
    }
    let wrong_method = app
        .client
        .delete(app.url("/invoices"))
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
    for (path, allow) in [("/healthz", "GET, HEAD"), ("/invoices/pay", "POST")] {
        let response = app.client.put(app.url(path)).send().await.expect("sent");
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some(allow),
            "{path}"
        );
        assert_problem(response, 405, "method_not_allowed").await;
    }
    assert!(
        app.invoices("pending").await.is_empty(),
        "nothing was created"
    );
}

async fn operations_endpoints(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_invoice("C001", 100, "EUR").await;
    assert_eq!(app.get_json("/healthz").await.0, 200);
    assert_eq!(app.get_json("/readyz").await.0, 200);
    assert_eq!(
        app.metric(r#"invoice_app_invoices{status="pending"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(
        app.metric(r#"http_requests_total{method="POST",route="/invoices",status="201"}"#)
            .await,
        Some(1.0)
    );
    // An invented method must not become a label value of its own.
    let invented = reqwest::Method::from_bytes(b"BREW").expect("a valid token");
    let brewed = app
        .client
        .request(invented, app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(brewed.status().as_u16(), 405);
    assert_eq!(
        app.metric(r#"http_requests_total{method="_OTHER",route="/healthz",status="405"}"#)
            .await,
        Some(1.0)
    );
    let (status, openapi) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/invoices",
        "/invoices/{id}",
        "/invoices/pay",
        "/pay-runs",
        "/pay-runs/{id}",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path} undocumented");
    }
}

both_backends!(
    create_and_read_an_invoice,
    listing_filters_and_pages,
    bad_input_gets_problem_json,
    operations_endpoints,
);
