//! Who the caller is: several static tokens per caller (rotation without downtime), and
//! idempotency scoped to the caller's name, never to the credential that was shown.

use crate::helpers::{Backend, charge_body, eur, spawn_app_with};
use api_contract::ChargeResponse;
use payment_provider::auth::{CallerTokens, DEV_TOKEN};
use payment_provider::config::Config;
use test_support::both_backends;

const OLD: &str = "old-token-of-invoice-app-0001";
const NEW: &str = "new-token-of-invoice-app-0002";

/// The callers as start-up reads them from `vars` (the rest of the settings left alone).
fn callers_from(vars: &[(&str, &str)]) -> Option<payment_provider::auth::CallerTokens> {
    Config::from_lookup(&|name| {
        vars.iter()
            .find(|(var, _)| *var == name)
            .map(|(_, value)| (*value).to_owned())
    })
    .expect("valid caller configuration")
    .callers
}

/// A rotation: the same key and body, first with the old token, then with the new one,
/// is one charge, one ledger row, one debit; the second answer is the replay.
async fn same_key_with_old_then_new_token_charges_once(backend: Backend, vars: &[(&str, &str)]) {
    let callers = callers_from(vars);
    let app = spawn_app_with(backend, |c| c.callers = callers).await;
    app.provider.fund("C001", eur(10_000)).await;
    let body = charge_body("inv-1", "C001", 1215, "EUR");

    let first = app.charge_as(OLD, "key-1", &body).await;
    assert_eq!(first.status().as_u16(), 201);
    let first: ChargeResponse = first.json().await.expect("charge");

    let second = app.charge_as(NEW, "key-1", &body).await;
    assert_eq!(
        second.status().as_u16(),
        200,
        "a replay, not a second charge"
    );
    assert_eq!(
        second
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let second: ChargeResponse = second.json().await.expect("charge");
    assert_eq!(first, second);

    // The provider's own database, not only its answers.
    let ledger = app.provider.ledger().await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].caller, "invoice-app");
    assert_eq!(app.provider.balance("C001").await, Some(10_000 - 1215));
}

async fn rotation_in_caller_tokens(backend: Backend) {
    let spec = format!("invoice-app:{OLD},invoice-app:{NEW}");
    same_key_with_old_then_new_token_charges_once(backend, &[("CALLER_TOKENS", &spec)]).await;
}

async fn rotation_in_caller_tokens_file(backend: Backend) {
    let dir = std::env::temp_dir().join(format!("pp-tokens-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("caller-tokens");
    // One pair a line, as a Secret edited by hand would hold them.
    std::fs::write(&file, format!("invoice-app:{OLD}\ninvoice-app:{NEW}\n")).expect("write");
    let path = file.to_str().expect("utf-8 path").to_owned();
    same_key_with_old_then_new_token_charges_once(backend, &[("CALLER_TOKENS_FILE", &path)]).await;
    std::fs::remove_dir_all(dir).ok();
}

/// With no callers configured, the public development token works on loopback only.
async fn dev_token_works_on_loopback(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.callers = None).await;
    app.provider.fund("C001", eur(1000)).await;
    let body = charge_body("inv-1", "C001", 100, "EUR");
    let response = app
        .charge_as(payment_provider::auth::DEV_TOKEN, "key-1", &body)
        .await;
    assert_eq!(response.status().as_u16(), 201);
}

both_backends!(
    rotation_in_caller_tokens,
    rotation_in_caller_tokens_file,
    dev_token_works_on_loopback,
);

/// The real binary started off loopback with `vars`; it must exit with code 2 (a bad
/// setting) within 10 s. Its stderr.
fn refused_off_loopback(dir: &std::path::Path, vars: &[(&str, &str)]) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_payment-provider"))
        .env_clear()
        .env("LISTEN_ADDR", "0.0.0.0:0")
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", dir.join("pp.db"))
        .envs(vars.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("payment-provider runs");
    // A provider that starts serves until stopped: give it a while, then call it a failure.
    for _ in 0..100 {
        if child.try_wait().expect("waits").is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{vars:?}: {stderr}");
    stderr
}

/// Off loopback, a provider with no callers configured refuses to start, naming what to set:
/// the real binary (exit code 2, like any bad setting) and the library's `build` alike.
#[tokio::test]
async fn dev_token_is_refused_off_loopback() {
    let dir = std::env::temp_dir().join(format!("pp-dev-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let stderr = refused_off_loopback(&dir, &[]);
    for var in ["CALLER_TOKENS", "CALLER_SUBJECTS", "LISTEN_ADDR"] {
        assert!(stderr.contains(var), "{var} not named in: {stderr}");
    }
    // Listing the public token by hand, beside a real one or in the file, is no way round it.
    let dev = format!("invoice-app:{DEV_TOKEN}");
    let beside = format!("audit:a-real-token-0123456789,{dev}");
    let file = dir.join("callers");
    std::fs::write(&file, &dev).expect("callers file");
    let file = file.to_string_lossy().into_owned();
    for vars in [
        vec![("CALLER_TOKENS", dev.as_str())],
        vec![("CALLER_TOKENS", beside.as_str())],
        vec![("CALLER_TOKENS_FILE", file.as_str())],
    ] {
        let stderr = refused_off_loopback(&dir, &vars);
        assert!(
            stderr.contains("CALLER_TOKENS") && stderr.contains("development token"),
            "{vars:?}: {stderr}"
        );
        assert!(
            !stderr.contains(DEV_TOKEN),
            "the token itself is not echoed: {stderr}"
        );
    }

    let mut config = Config::from_lookup(&|_| None).expect("defaults");
    config.database_url =
        payment_provider::db::DbUrl::Sqlite(dir.join("pp-lib.db").to_string_lossy().into_owned());
    config.listen_addr = ([0, 0, 0, 0], 0).into();
    config.metrics_addr = ([127, 0, 0, 1], 0).into();
    config.callers = None;
    let refused = payment_provider::startup::Application::build(config.clone()).await;
    let error = format!("{:#}", refused.err().expect("refused to start"));
    assert!(error.contains("loopback"), "{error}");
    config.callers = Some(CallerTokens::dev_default());
    let refused = payment_provider::startup::Application::build(config).await;
    let error = format!("{:#}", refused.err().expect("refused to start"));
    assert!(error.contains("development token"), "{error}");
    std::fs::remove_dir_all(dir).ok();
}
