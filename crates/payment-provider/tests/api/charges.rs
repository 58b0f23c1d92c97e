//! The charge call's outcomes, each checked in the ledger as well as on the wire.

use crate::helpers::{Backend, assert_problem, charge_body, eur, spawn_app};
use api_contract::{ChargeResponse, Currency, Money};
use test_support::both_backends;

async fn successful_charge_debits_the_account(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(10_000)).await;

    let response = app
        .charge("inv-1", &charge_body("inv-1", "C001", 1215, "EUR"))
        .await;

    assert_eq!(response.status().as_u16(), 201);
    let charge: ChargeResponse = response.json().await.expect("charge body");
    assert!(charge.id.starts_with("ch_"));
    assert_eq!(charge.amount, eur(1215));
    assert_eq!(app.provider.balance("C001").await, Some(10_000 - 1215));
    let ledger = app.provider.ledger().await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].id, charge.id);
    assert_eq!(ledger[0].invoice_id, "inv-1");

    let fetched = app.get(&format!("/v1/charges/{}", charge.id)).await;
    assert_eq!(fetched.status().as_u16(), 200);
    assert_eq!(
        fetched.json::<ChargeResponse>().await.expect("charge"),
        charge
    );
    let account = app.get("/v1/accounts/C001").await;
    assert_eq!(account.status().as_u16(), 200);
    let account: serde_json::Value = account.json().await.expect("account");
    assert_eq!(account["balance"]["minor_units"], 10_000 - 1215);
}

async fn insufficient_funds_is_402_and_charges_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(1000)).await;

    let response = app
        .charge("inv-1", &charge_body("inv-1", "C001", 1001, "EUR"))
        .await;

    assert_problem(response, 402, "insufficient_funds").await;
    assert_eq!(app.provider.balance("C001").await, Some(1000));
    assert!(app.provider.ledger().await.is_empty());
}

async fn exact_balance_can_be_charged(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(1000)).await;
    let response = app
        .charge("inv-1", &charge_body("inv-1", "C001", 1000, "EUR"))
        .await;
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(app.provider.balance("C001").await, Some(0));
}

async fn unknown_customer_is_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .charge("inv-1", &charge_body("inv-1", "NOPE", 100, "EUR"))
        .await;
    assert_problem(response, 404, "customer_not_found").await;
    assert!(app.provider.ledger().await.is_empty());
}

async fn currency_mismatch_is_422(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider
        .fund("C003", Money::new(10_000, Currency::Dkk).expect("valid"))
        .await;
    let response = app
        .charge("inv-1", &charge_body("inv-1", "C003", 100, "EUR"))
        .await;
    assert_problem(response, 422, "currency_mismatch").await;
    assert_eq!(app.provider.balance("C003").await, Some(10_000));
}

async fn bad_or_missing_token_is_401(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(10_000)).await;
    let body = charge_body("inv-1", "C001", 100, "EUR");
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer"),
    ] {
        let mut request = app
            .client
            .post(app.url("/v1/charges"))
            .header("Idempotency-Key", "k1")
            .json(&body);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let response = request.send().await.expect("sent");
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        assert_problem(response, 401, "unauthorized").await;
    }
    let inspect = app
        .client
        .get(app.url("/v1/accounts/C001"))
        .send()
        .await
        .expect("sent");
    assert_problem(inspect, 401, "unauthorized").await;
    assert!(app.provider.ledger().await.is_empty());
}

async fn concurrent_charges_never_overdraw(backend: Backend) {
    let app = spawn_app(backend).await;
    // Room for exactly 7 of the 20 charges.
    app.provider.fund("C001", eur(7 * 300 + 299)).await;
    let app = std::sync::Arc::new(app);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let key = format!("inv-{i}");
                app.charge(&key, &charge_body(&key, "C001", 300, "EUR"))
                    .await
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 402).count(),
        13,
        "{statuses:?}"
    );
    assert_eq!(app.provider.balance("C001").await, Some(299));
    assert_eq!(app.provider.ledger().await.len(), 7);
}

async fn charges_of_other_callers_are_invisible(backend: Backend) {
    let app = crate::helpers::spawn_app_with(backend, |c| {
        c.callers = Some(
            payment_provider::auth::CallerTokens::parse(&format!(
                "invoice-app:{},audit:audit-token-0123456789",
                test_support::TEST_TOKEN
            ))
            .expect("valid"),
        );
    })
    .await;
    app.provider.fund("C001", eur(10_000)).await;
    let charge: ChargeResponse = app
        .charge("k1", &charge_body("inv-1", "C001", 100, "EUR"))
        .await
        .json()
        .await
        .expect("charge");
    let other = app
        .client
        .get(app.url(&format!("/v1/charges/{}", charge.id)))
        .bearer_auth("audit-token-0123456789")
        .send()
        .await
        .expect("sent");
    assert_problem(other, 404, "not_found").await;
    // The same key from another caller is that caller's own key: a new charge.
    let theirs = app
        .client
        .post(app.url("/v1/charges"))
        .bearer_auth("audit-token-0123456789")
        .header("Idempotency-Key", "k1")
        .json(&charge_body("inv-1", "C001", 100, "EUR"))
        .send()
        .await
        .expect("sent");
    assert_eq!(theirs.status().as_u16(), 201);
    assert_eq!(app.provider.balance("C001").await, Some(10_000 - 200));
}

both_backends!(
    successful_charge_debits_the_account,
    insufficient_funds_is_402_and_charges_nothing,
    exact_balance_can_be_charged,
    unknown_customer_is_404,
    currency_mismatch_is_422,
    bad_or_missing_token_is_401,
    concurrent_charges_never_overdraw,
    charges_of_other_callers_are_invisible,
);
