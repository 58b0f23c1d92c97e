//! The API over TLS: charges answered over https to a client that trusts the CA, nothing
//! over plain http on that port, a renewed certificate served without a restart (the files
//! swapped the way a Kubernetes Secret volume swaps them), and no start-up in clear off
//! loopback unless said on purpose.

use std::path::{Path, PathBuf};
use std::time::Duration;

use payment_provider::tls::TlsSettings;

use crate::helpers::{Backend, TestApp, charge_body, eur, spawn_app_with};
use test_support::both_backends;
use test_support::pki::TestPki;

/// `tls.crt` and `tls.key` laid out as the kubelet lays out a Secret volume: each a symlink
/// through `..data` to a timestamped directory, and an update swaps `..data` in one rename.
pub struct SecretVolume {
    pub dir: PathBuf,
    generation: u32,
}

impl SecretVolume {
    pub fn new(pki: &TestPki) -> SecretVolume {
        let dir = std::env::temp_dir().join(format!("pp-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut volume = SecretVolume { dir, generation: 0 };
        volume.update(pki);
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(Path::new("..data").join(file), volume.dir.join(file))
                .expect("symlink");
        }
        volume
    }

    /// New contents, swapped in at once.
    pub fn update(&mut self, pki: &TestPki) {
        self.generation += 1;
        let version = format!("..v{}", self.generation);
        let data = self.dir.join(&version);
        std::fs::create_dir_all(&data).expect("version dir");
        std::fs::write(data.join("tls.crt"), &pki.cert_pem).expect("cert");
        std::fs::write(data.join("tls.key"), &pki.key_pem).expect("key");
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).expect("symlink");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap");
    }

    pub fn settings(&self) -> TlsSettings {
        let mut settings = TlsSettings::new(self.dir.join("tls.crt"), self.dir.join("tls.key"));
        settings.reload_every = Duration::from_millis(200);
        settings
    }
}

impl Drop for SecretVolume {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

async fn spawn_tls(backend: Backend, volume: &SecretVolume) -> TestApp {
    let settings = volume.settings();
    spawn_app_with(backend, move |c| c.tls = Some(settings)).await
}

async fn charges_are_served_over_tls_only(backend: Backend) {
    let pki = TestPki::new("test CA");
    let volume = SecretVolume::new(&pki);
    let mut app = spawn_tls(backend, &volume).await;
    assert!(app.provider.base_url.starts_with("https://127.0.0.1:"));
    app.client = pki.client();
    app.provider.fund("C001", eur(1000)).await;

    let response = app
        .charge("inv-1", &charge_body("inv-1", "C001", 100, "EUR"))
        .await;
    assert_eq!(response.status().as_u16(), 201);

    // The same port in clear: no HTTP answer at all, so no token was read and nothing charged.
    let plain = app.provider.base_url.replacen("https://", "http://", 1);
    let refused = reqwest::Client::new()
        .post(format!("{plain}/v1/charges"))
        .bearer_auth(&app.provider.token)
        .header("Idempotency-Key", "inv-2")
        .json(&charge_body("inv-2", "C001", 100, "EUR"))
        .send()
        .await;
    assert!(refused.is_err(), "plain http answered: {refused:?}");
    // A client that does not trust the CA does not get through either.
    let untrusted = reqwest::Client::new().get(app.url("/healthz")).send().await;
    assert!(
        untrusted.is_err(),
        "an unknown CA was accepted: {untrusted:?}"
    );
    assert_eq!(app.provider.ledger().await.len(), 1);
    assert_eq!(app.provider.balance("C001").await, Some(900));
}

async fn a_renewed_certificate_is_served_without_restart(backend: Backend) {
    let old = TestPki::new("old CA");
    let mut volume = SecretVolume::new(&old);
    let app = spawn_tls(backend, &volume).await;
    let healthz = app.url("/healthz");
    let answered = |client: reqwest::Client| {
        let url = healthz.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    };
    assert!(answered(old.client()).await);

    let new = TestPki::new("new CA");
    volume.update(&new);
    // Each try is a new client, so a new connection and a new handshake.
    let mut renewed = false;
    for _ in 0..50 {
        if answered(new.client()).await {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(renewed, "the new certificate was not served within 5 s");
    assert!(
        !answered(old.client()).await,
        "the old certificate is still served"
    );

    // A broken update (a key that is not the certificate's) keeps the served pair.
    let mut broken = TestPki::new("broken CA");
    broken.key_pem = old.key_pem.clone();
    volume.update(&broken);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        answered(new.client()).await,
        "a broken pair replaced a good one"
    );
}

both_backends!(
    charges_are_served_over_tls_only,
    a_renewed_certificate_is_served_without_restart,
);

/// The real binary with `vars` on top of a scratch database and a random metrics port.
fn start_binary(dir: &Path, vars: &[(&str, &str)]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_payment-provider"))
        .env_clear()
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", dir.join("pp.db"))
        .env("CALLER_TOKENS", "invoice-app:a-real-token-0123456789")
        .envs(vars.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("payment-provider runs")
}

/// Its exit code (None: still running after 10 s, then stopped) and stderr.
async fn exit_of(mut child: std::process::Child) -> (Option<i32>, String) {
    let mut code = None;
    for _ in 0..100 {
        if let Some(status) = child.try_wait().expect("waits") {
            code = status.code();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    (code, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Whether `url` answers 2xx within 10 s; the binary is stopped either way.
async fn serves(mut child: std::process::Child, url: &str, client: &reqwest::Client) -> bool {
    for _ in 0..100 {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            let _ = child.kill();
            let _ = child.wait();
            return true;
        }
        if child.try_wait().expect("waits").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, stderr) = exit_of(child).await;
    eprintln!("{stderr}");
    false
}

/// Off loopback the API is served over TLS or, said on purpose, in clear; anything else, and
/// any file that cannot be served, stops start-up with exit code 2 naming the variable.
#[tokio::test]
async fn plain_http_off_loopback_needs_to_be_asked_for() {
    let pki = TestPki::new("test CA");
    let volume = SecretVolume::new(&pki);
    let dir = volume.dir.clone();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let not_pem = dir.join("not-pem");
    std::fs::write(&not_pem, "not a certificate").expect("write");
    let not_pem = not_pem.to_str().expect("utf-8");
    let open = ("LISTEN_ADDR", "0.0.0.0:0");
    for (vars, var) in [
        (vec![open], "TLS_CERT_FILE"),
        (
            vec![open, ("ALLOW_PLAINTEXT_HTTP", "false")],
            "TLS_CERT_FILE",
        ),
        (
            vec![open, ("ALLOW_PLAINTEXT_HTTP", "yes")],
            "ALLOW_PLAINTEXT_HTTP",
        ),
        (vec![open, ("TLS_CERT_FILE", cert)], "TLS_KEY_FILE"),
        (vec![open, ("TLS_KEY_FILE", key)], "TLS_CERT_FILE"),
        (
            vec![open, ("TLS_CERT_FILE", not_pem), ("TLS_KEY_FILE", key)],
            "TLS_CERT_FILE",
        ),
        (
            vec![open, ("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", not_pem)],
            "TLS_KEY_FILE",
        ),
        (
            vec![
                open,
                ("TLS_CERT_FILE", "/nonexistent"),
                ("TLS_KEY_FILE", key),
            ],
            "TLS_CERT_FILE",
        ),
    ] {
        let (code, stderr) = exit_of(start_binary(&dir, &vars)).await;
        assert_eq!(code, Some(2), "{vars:?}: {stderr}");
        assert!(
            stderr.contains(var),
            "{vars:?}: {var} not named in {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    // Served: over TLS, in clear when asked for, and in clear on loopback without asking.
    for (scheme, vars) in [
        (
            "https",
            vec![("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key)],
        ),
        ("http", vec![("ALLOW_PLAINTEXT_HTTP", "true")]),
        ("http", vec![]),
    ] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let host = if vars.is_empty() {
            "127.0.0.1"
        } else {
            "0.0.0.0"
        };
        let listen = format!("{host}:{port}");
        let mut all = vars.clone();
        all.push(("LISTEN_ADDR", &listen));
        let child = start_binary(&dir, &all);
        let url = format!("{scheme}://127.0.0.1:{port}/readyz");
        assert!(
            serves(child, &url, &pki.client()).await,
            "{all:?} not served"
        );
    }
}
