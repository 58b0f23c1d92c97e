//! The real binary's logs: never a caller's token, right or wrong, even at debug; what a
//! token says quoted only as a short prefix; and no ERROR for a client's malformed request.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SECRET: &str = "caller-secret-never-logged-0042";
const WRONG: &str = "wrong-secret-never-logged-0043";

/// The binary on a free port with only `env` (and a scratch database); returns it once ready.
async fn spawn_binary(dir: &std::path::Path, env: &[(&str, String)]) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_payment-provider"));
    command
        .env_clear()
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        // Several of these run at once: no fixed metrics port.
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", dir.join("pp.db"))
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("payment-provider starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return (child, base);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    panic!("payment-provider did not start:\n{}", logs_of(child));
}

/// Stops the binary and returns everything it wrote.
fn logs_of(mut child: Child) -> String {
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pp-logs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_appear_in_logs() {
    let dir = scratch_dir();
    let (child, base) = spawn_binary(
        &dir,
        &[
            ("CALLER_TOKENS", format!("invoice-app:{SECRET}")),
            ("RUST_LOG", "debug".to_owned()),
        ],
    )
    .await;
    let client = reqwest::Client::new();
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
    let logs = logs_of(child);
    assert!(
        logs.contains("payment-provider listening"),
        "logs were captured:\n{logs}"
    );
    assert!(!logs.contains(SECRET), "the caller's token was logged");
    assert!(!logs.contains(WRONG), "a presented token was logged");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_not_logged_as_errors() {
    let dir = scratch_dir();
    let (child, base) = spawn_binary(&dir, &[]).await;
    let addr = base.trim_start_matches("http://");
    for request in [
        "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: \x01\r\n\r\n".to_owned(),
        format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)),
        "NOT HTTP AT ALL\r\n\r\n".to_owned(),
    ] {
        let mut stream = std::net::TcpStream::connect(addr).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = stream.write_all(request.as_bytes());
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 4") || answer.is_empty(),
            "answered {answer:?}"
        );
    }
    let logs = logs_of(child);
    assert!(
        logs.contains("payment-provider listening"),
        "logs were captured:\n{logs}"
    );
    assert!(
        !logs.contains("\"level\":\"ERROR\""),
        "a client's malformed request was logged as an error:\n{logs}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Text a caller makes up (a 20 KB key id, algorithm or subject) is quoted in the log only
/// as a short prefix: a refused token cannot flood the logs or hide other lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_token_text_is_logged_only_as_a_prefix() {
    use serde_json::json;
    use test_support::issuer::{Issuer, SigningKey};

    let key = SigningKey::rsa("rsa-1");
    let issuer = Issuer::start(&[&key]);
    let dir = scratch_dir();
    let (child, base) = spawn_binary(
        &dir,
        &[
            (
                "CALLER_SUBJECTS",
                "invoice-app=system:serviceaccount:invoices:invoice-app".to_owned(),
            ),
            ("SA_TOKEN_ISSUER", issuer.url.clone()),
        ],
    )
    .await;
    let huge = |c: char| c.to_string().repeat(20_000);
    let claims = issuer.service_account_claims("invoices", "invoice-app");
    let mut stranger = claims.clone();
    stranger["sub"] = json!(format!("system:serviceaccount:x:{}", huge('s')));
    let tokens = [
        ("the right token", key.sign(&claims), 201),
        (
            "a 20 KB kid",
            key.sign_with_header(&json!({"alg": "RS256", "kid": huge('k')}), &claims),
            401,
        ),
        (
            "a 20 KB alg",
            key.sign_with_header(&json!({"alg": huge('a'), "kid": "rsa-1"}), &claims),
            401,
        ),
        ("a 20 KB subject", key.sign(&stranger), 401),
    ];
    let client = reqwest::Client::new();
    let body = serde_json::json!({"invoice_id": "i1", "customer_id": "C001",
                                  "amount": {"minor_units": 100, "currency": "EUR"}});
    for (i, (what, token, expected)) in tokens.iter().enumerate() {
        let response = client
            .post(format!("{base}/v1/charges"))
            .bearer_auth(token)
            .header("Idempotency-Key", format!("k{i}"))
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), *expected, "{what}");
    }
    let logs = logs_of(child);
    let refusals = logs.matches("caller refused").count();
    assert_eq!(refusals, 3, "each refusal logged once:\n{logs:.4000}");
    for c in ['k', 'a', 's'] {
        assert!(
            !logs.contains(&c.to_string().repeat(100)),
            "the made-up {c}… text was logged at length"
        );
    }
    let longest = logs.lines().map(str::len).max().unwrap_or_default();
    assert!(longest < 1000, "a log line of {longest} bytes");
    let _ = std::fs::remove_dir_all(dir);
}
