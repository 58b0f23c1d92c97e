//! Hostile input: generated bodies, queries and headers. Whatever arrives, the answer is a
//! 2xx or a 4xx problem+json — never a 5xx, a panic or a hang.

use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, api_client, spawn_app};

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies close to a valid invoice, one part at a time replaced by something else.
fn near_invoice() -> impl Strategy<Value = Value> {
    (any_json(), any_json(), any_json(), 0..4usize).prop_map(|(a, b, c, which)| {
        let mut body =
            json!({"customer_id": "C001", "amount": {"minor_units": 100, "currency": "EUR"}});
        match which {
            0 => body["customer_id"] = a,
            1 => body["amount"]["minor_units"] = a,
            2 => body["amount"]["currency"] = b,
            _ => body["description"] = c,
        }
        body
    })
}

fn sample<T: std::fmt::Debug>(strategy: &impl Strategy<Value = T>, runner: &mut TestRunner) -> T {
    strategy
        .new_tree(runner)
        .expect("strategy generates")
        .current()
}

async fn assert_clean(response: reqwest::Response, what: &str) {
    let status = response.status().as_u16();
    assert!(status < 500, "{what}: answered {status}");
    if status >= 400 {
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert_eq!(content_type, "application/problem+json", "{what}");
        let body: Value = response.json().await.expect("problem body");
        assert!(body["code"].is_string(), "{what}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_bodies_queries_and_paths_never_cause_a_5xx() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut runner = TestRunner::deterministic();
    let bodies = prop_oneof![any_json(), near_invoice()];
    for _ in 0..300 {
        let body = sample(&bodies, &mut runner);
        let response = app
            .client
            .post(app.url("/invoices"))
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_clean(response, &format!("POST /invoices {body}")).await;
    }
    let bytes = prop::collection::vec(any::<u8>(), 0..256);
    for _ in 0..100 {
        let raw = sample(&bytes, &mut runner);
        let response = app
            .client
            .post(app.url("/invoices"))
            .header("content-type", "application/json")
            .body(raw.clone())
            .send()
            .await
            .expect("sent");
        assert_clean(response, &format!("POST /invoices bytes {raw:?}")).await;
    }
    let text = "\\PC{0,40}";
    for _ in 0..150 {
        let (key, value, segment) = (
            sample(&text, &mut runner),
            sample(&text, &mut runner),
            sample(&text, &mut runner),
        );
        let response = app
            .client
            .get(app.url("/invoices"))
            .query(&[
                (key.as_str(), value.as_str()),
                ("status", value.as_str()),
                ("cursor", key.as_str()),
            ])
            .send()
            .await
            .expect("sent");
        assert_clean(response, &format!("GET /invoices?{key}={value}")).await;
        let encoded: String = url_segment(&segment);
        for path in [
            format!("/invoices/{encoded}"),
            format!("/pay-runs/{encoded}"),
        ] {
            let response = app.client.get(app.url(&path)).send().await.expect("sent");
            assert_clean(response, &path).await;
        }
    }
    // Still serving after all of it.
    assert_eq!(app.get_json("/readyz").await.0, 200);
}

fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_abuse_slow_clients_and_floods_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::builder(Backend::Sqlite).spawn().await;

    // Large headers are served up to the server's limit; past it they are refused with a
    // 4xx or a closed connection, never a 5xx or a crash.
    let large = app
        .client
        .get(app.url("/invoices"))
        .header("x-large", "x".repeat(16 * 1024))
        .send()
        .await;
    assert_eq!(large.expect("sent").status().as_u16(), 200);
    let huge = app
        .client
        .get(app.url("/invoices"))
        .header("x-huge", "x".repeat(512 * 1024))
        .send()
        .await;
    if let Ok(response) = huge {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    // Headers that are not UTF-8. (A fresh client: the server may close the connection
    // that carried the oversized header, and reusing it would race that close.)
    let response = api_client()
        .get(app.url("/invoices"))
        .header(
            "x-bytes",
            reqwest::header::HeaderValue::from_bytes(b"\xff\xfe\xfd").expect("header"),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);

    // A client that never finishes its request head is cut off by the server's timeout.
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /invoices HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), slow.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the server kept a half-sent request open");

    // A flood of concurrent requests is answered, every one. (A fresh client: the idle
    // keep-alive connections of the first one were closed by the server meanwhile.)
    let flood = api_client();
    let tasks: Vec<_> = (0..400)
        .map(|_| {
            let (client, url) = (flood.clone(), app.url("/invoices?limit=5"));
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    for task in tasks {
        let status = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("answered in time")
            .expect("task")
            .expect("response");
        assert!(status == 200 || status == 503, "{status}");
    }
    assert_eq!(app.get_json("/healthz").await.0, 200);
}
