//! Health, readiness, metrics and trace propagation.

use crate::helpers::{Backend, assert_problem, charge_body, eur, spawn_app};
use test_support::both_backends;

async fn health_and_readiness(backend: Backend) {
    let app = spawn_app(backend).await;
    let health = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(health.status().as_u16(), 200);
    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(ready.status().as_u16(), 200);
}

async fn metrics_count_requests_and_outcomes(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(1000)).await;
    app.charge("k1", &charge_body("inv-1", "C001", 100, "EUR"))
        .await;
    app.charge("k2", &charge_body("inv-2", "C001", 5000, "EUR"))
        .await;
    app.charge("k1", &charge_body("inv-1", "C001", 100, "EUR"))
        .await;
    // An invented method must not become a label value of its own.
    let invented = reqwest::Method::from_bytes(b"BREW").expect("a valid token");
    let brewed = app
        .client
        .request(invented, app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(brewed.status().as_u16(), 405);
    let text = app
        .client
        .get(&app.provider.metrics_url)
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    for line in [
        r#"payment_provider_charges_total{outcome="succeeded"} 1"#,
        r#"payment_provider_charges_total{outcome="insufficient_funds"} 1"#,
        r#"payment_provider_charges_total{outcome="replayed"} 1"#,
        r#"http_requests_total{method="POST",route="/v1/charges",status="201"} 1"#,
        r#"http_requests_total{method="POST",route="/v1/charges",status="402"} 1"#,
        r#"http_requests_total{method="_OTHER",route="/healthz",status="405"} 1"#,
        // Present before the first one, so the first refusal or server error is a rise.
        r#"http_requests_total{method="POST",route="/v1/charges",status="401"} 0"#,
        r#"http_requests_total{method="POST",route="/v1/charges",status="503"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("BREW"), "{text}");
    assert!(text.contains("http_request_duration_seconds_bucket"));
}

/// `/metrics` lives on its own listener (METRICS_ADDR), which only Prometheus is let reach:
/// the API port does not serve it, and the metrics port serves nothing else.
async fn metrics_are_off_the_api_port(backend: Backend) {
    let app = spawn_app(backend).await;
    let on_api = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("sent");
    assert_problem(on_api, 404, "not_found").await;
    let metrics = app
        .client
        .get(&app.provider.metrics_url)
        .send()
        .await
        .expect("sent");
    assert_eq!(metrics.status().as_u16(), 200);
    assert!(
        metrics
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    let metrics_base = app.provider.metrics_url.trim_end_matches("/metrics");
    for path in ["/v1/charges", "/healthz", "/readyz"] {
        let elsewhere = app
            .client
            .get(format!("{metrics_base}{path}"))
            .bearer_auth(&app.provider.token)
            .send()
            .await
            .expect("sent");
        assert_problem(elsewhere, 404, "not_found").await;
    }
}

async fn trace_context_is_continued_or_ignored(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(1000)).await;
    let response = app
        .client
        .post(app.url("/v1/charges"))
        .bearer_auth(&app.provider.token)
        .header("Idempotency-Key", "k1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&charge_body("inv-1", "C001", 100, "EUR"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 201);
    let garbage = app
        .client
        .get(app.url("/healthz"))
        .header("traceparent", "not-a-trace")
        .send()
        .await
        .expect("sent");
    assert_eq!(garbage.status().as_u16(), 200);
}

both_backends!(
    health_and_readiness,
    metrics_count_requests_and_outcomes,
    metrics_are_off_the_api_port,
    trace_context_is_continued_or_ignored
);
