//! The real binary's logs never contain a caller's token, right or wrong, even at debug.

use std::process::{Command, Stdio};
use std::time::Duration;

const SECRET: &str = "caller-secret-never-logged-0042";
const WRONG: &str = "wrong-secret-never-logged-0043";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_appear_in_logs() {
    let dir = std::env::temp_dir().join(format!("pp-logs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_payment-provider"))
        .env_clear()
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", dir.join("pp.db"))
        .env("CALLER_TOKENS", format!("invoice-app:{SECRET}"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("payment-provider starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "payment-provider did not start");
    let body = serde_json::json!({"invoice_id": "i1", "customer_id": "C001",
                                  "amount": {"minor_units": 100, "currency": "EUR"}});
    for (token, expected) in [(SECRET, 201), (WRONG, 401), (SECRET, 200)] {
        let response = client
            .post(format!("{base}/v1/charges"))
            .bearer_auth(token)
            .header("Idempotency-Key", "k1")
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), expected);
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        logs.contains("payment-provider listening"),
        "logs were captured:\n{logs}"
    );
    assert!(!logs.contains(SECRET), "the caller's token was logged");
    assert!(!logs.contains(WRONG), "a presented token was logged");
    let _ = std::fs::remove_dir_all(dir);
}
