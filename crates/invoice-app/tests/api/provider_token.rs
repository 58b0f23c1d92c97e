//! `PAYMENT_PROVIDER_TOKEN_FILE` is read again when it changes: the kubelet rotates a
//! projected ServiceAccount token by swapping a new file in, and invoice-app must not keep
//! showing the old one until it expires.

use invoice_app::config::Config;
use payment_provider::auth::CallerTokens;

use crate::helpers::{Backend, spawn_app_with};
use test_support::both_backends;

const FIRST: &str = "first-token-of-invoice-app-01";
const SECOND: &str = "second-token-after-rotation-002";

async fn rewritten_token_file_is_used_for_the_next_charge(backend: Backend) {
    let dir = std::env::temp_dir().join(format!("ia-token-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("token");
    std::fs::write(&file, format!("{FIRST}\n")).expect("write");
    let path = file.to_str().expect("utf-8 path").to_owned();
    let from_env =
        Config::from_lookup(&|name| (name == "PAYMENT_PROVIDER_TOKEN_FILE").then(|| path.clone()))
            .expect("valid configuration");
    // Each token under its own caller name, so the provider's ledger tells which token
    // each charge carried.
    let callers = format!("invoice-app:{FIRST},invoice-app-rotated:{SECOND}");
    let app = spawn_app_with(
        backend,
        |p| p.callers = Some(CallerTokens::parse(&callers).expect("valid tokens")),
        |c| {
            c.provider_token = from_env.provider_token;
            c.provider_token_file = from_env.provider_token_file;
        },
    )
    .await;
    app.provider()
        .fund(
            "C001",
            crate::helpers::money(10_000, api_contract::Currency::Eur),
        )
        .await;

    app.create_invoice("C001", 100, "EUR").await;
    app.pay().await;
    // As the kubelet does it: the new token written beside, then swapped in.
    let next = dir.join("token.next");
    std::fs::write(&next, format!("{SECOND}\n")).expect("write");
    std::fs::rename(&next, &file).expect("swap");
    app.create_invoice("C001", 200, "EUR").await;
    app.pay().await;
    // As a hand edit does it: rewritten in place.
    std::fs::write(&file, FIRST).expect("rewrite");
    app.create_invoice("C001", 300, "EUR").await;
    app.pay().await;

    let mut ledger: Vec<(i64, String)> = app
        .provider()
        .ledger()
        .await
        .into_iter()
        .map(|c| (c.amount_minor, c.caller))
        .collect();
    ledger.sort();
    assert_eq!(
        ledger,
        vec![
            (100, "invoice-app".to_owned()),
            (200, "invoice-app-rotated".to_owned()),
            (300, "invoice-app".to_owned()),
        ]
    );
    std::fs::remove_dir_all(dir).ok();
}

both_backends!(rewritten_token_file_is_used_for_the_next_charge);
