//! payment-provider over TLS: invoice-app pays through it trusting the CA of
//! `PAYMENT_PROVIDER_CA_FILE`; a provider whose certificate that CA did not sign gets no
//! request at all (the bearer token never leaves) until the file trusts it, read again
//! without a restart; and plain http to a provider off loopback stops start-up unless asked for.

use std::path::{Path, PathBuf};
use std::time::Duration;

use payment_provider::tls::TlsSettings;

use crate::helpers::{Backend, TestApp, spawn_app_with};
use test_support::both_backends;
use test_support::pki::TestPki;

/// A scratch directory: the provider's certificate and key, invoice-app's CA file.
struct Files(PathBuf);

impl Files {
    fn new(served: &TestPki, trusted: &TestPki) -> Files {
        let dir = std::env::temp_dir().join(format!("ia-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("tls.crt"), &served.cert_pem).expect("cert");
        std::fs::write(dir.join("tls.key"), &served.key_pem).expect("key");
        let files = Files(dir);
        files.trust(trusted);
        files
    }

    /// Replaces the CA file in one rename, as a ConfigMap volume update does.
    fn trust(&self, pki: &TestPki) {
        let tmp = self.0.join("ca.crt.tmp");
        std::fs::write(&tmp, &pki.ca_pem).expect("CA");
        std::fs::rename(tmp, self.ca_file()).expect("swap");
    }

    fn ca_file(&self) -> PathBuf {
        self.0.join("ca.crt")
    }

    fn tls(&self) -> TlsSettings {
        TlsSettings::new(self.0.join("tls.crt"), self.0.join("tls.key"))
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

async fn spawn_over_tls(backend: Backend, files: &Files) -> TestApp {
    let (tls, ca_file) = (files.tls(), files.ca_file());
    let app = spawn_app_with(
        backend,
        move |provider| provider.tls = Some(tls),
        move |config| config.provider_ca_file = Some(ca_file),
    )
    .await;
    assert!(
        app.provider().base_url.starts_with("https://"),
        "{}",
        app.provider().base_url
    );
    app
}

/// Requests payment-provider's HTTP layer counted on its charge route, by status.
async fn charge_requests_seen(app: &TestApp) -> usize {
    let text = reqwest::Client::new()
        .get(&app.provider().metrics_url)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with("http_requests_total{") && l.contains("/v1/charges"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

async fn pays_through_a_tls_provider_trusting_the_configured_ca(backend: Backend) {
    let pki = TestPki::new("payments CA");
    let files = Files::new(&pki, &pki);
    let app = spawn_over_tls(backend, &files).await;
    app.eur_invoices(10_000, 3).await;

    let report = app.pay().await;

    assert_eq!(report["summary"]["paid"], 3, "{report}");
    assert_eq!(app.provider().ledger().await.len(), 3);
}

async fn a_provider_the_ca_did_not_sign_gets_no_request_until_trusted(backend: Backend) {
    let (provider_ca, other_ca) = (TestPki::new("payments CA"), TestPki::new("another CA"));
    let files = Files::new(&provider_ca, &other_ca);
    let app = spawn_over_tls(backend, &files).await;
    app.eur_invoices(10_000, 1).await;

    let report = app.pay().await;

    // Refused at the handshake: no HTTP request reached the provider, so no token did.
    assert_eq!(report["summary"]["paid"], 0, "{report}");
    assert_eq!(report["summary"]["failed"], 0, "never a decline: {report}");
    assert_eq!(app.invoices("pending").await.len(), 1);
    assert!(app.provider().ledger().await.is_empty());
    assert_eq!(charge_requests_seen(&app).await, 0);

    // The CA file now trusts the provider's CA: the next run pays, with no restart.
    files.trust(&provider_ca);
    let report = app.pay().await;
    assert_eq!(report["summary"]["paid"], 1, "{report}");
    assert_eq!(app.provider().ledger().await.len(), 1);
}

both_backends!(
    pays_through_a_tls_provider_trusting_the_configured_ca,
    a_provider_the_ca_did_not_sign_gets_no_request_until_trusted,
);

/// The real binary pointed at a provider over plain http off loopback: exit code 2 naming
/// PAYMENT_PROVIDER_URL, unless PAYMENT_PROVIDER_ALLOW_PLAINTEXT_HTTP=true says so.
#[tokio::test]
async fn plain_http_to_a_provider_off_loopback_needs_to_be_asked_for() {
    let dir = std::env::temp_dir().join(format!("ia-plain-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let start = |dir: &Path, allow: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_invoice-app"));
        command
            .env_clear()
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", dir.join("ia.db"))
            .env("SEED", "none")
            .env("PAY_SCHEDULE", "off")
            .env(
                "PAYMENT_PROVIDER_URL",
                "http://payment-provider.payments.svc.cluster.local:8080",
            )
            .env("PAYMENT_PROVIDER_TOKEN", "a-static-token-0123456789")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(allow) = allow {
            command.env("PAYMENT_PROVIDER_ALLOW_PLAINTEXT_HTTP", allow);
        }
        command.spawn().expect("invoice-app runs")
    };

    for allow in [None, Some("false")] {
        let mut child = start(&dir, allow);
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
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(code, Some(2), "{allow:?}: {stderr}");
        assert!(stderr.contains("PAYMENT_PROVIDER_URL"), "{stderr}");
    }

    let mut child = start(&dir, Some("true"));
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    let mut served = false;
    for _ in 0..100 {
        if reqwest::get(&healthz)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    assert!(served, "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::remove_dir_all(dir).ok();
}
