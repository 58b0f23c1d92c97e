//! What the chart's alerts read. They take the database's word, not one process's
//! counters: the monthly run of the chart's CronJob is a process no Prometheus scrapes.

use std::process::Command;

use payment_provider::db::DbUrl;

use crate::both_backends;
use crate::helpers::{Backend, spawn_app};

/// `invoice-app pay` (the CronJob's command) run as its own process: the serving
/// replica's metrics show the run, its invoices and its calls, though its own counters
/// saw none of them.
async fn a_run_by_another_process_shows_in_the_replicas_metrics(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.eur_invoices(1_000_000, 3).await;
    let database_url = match &app.db.url {
        DbUrl::Postgres(url) => url.clone(),
        DbUrl::Sqlite(path) => format!("sqlite://{path}"),
    };
    let out = Command::new(env!("CARGO_BIN_EXE_invoice-app"))
        .arg("pay")
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("PAYMENT_PROVIDER_URL", &app.provider.base_url)
        .env(
            "PAYMENT_PROVIDER_TOKEN",
            payment_provider::testing::TEST_TOKEN,
        )
        .env("SEED", "none")
        .env("LOG_FORMAT", "json")
        .output()
        .expect("invoice-app pay runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (sample, want) in [
        (r#"invoice_app_pay_runs{status="completed"}"#, 1.0),
        (r#"invoice_app_pay_run_invoices{result="paid"}"#, 3.0),
        (
            r#"invoice_app_recent_charge_attempts{outcome="succeeded"}"#,
            3.0,
        ),
        ("invoice_app_recent_charge_attempts_unanswered", 0.0),
        (r#"invoice_app_invoices{status="paid"}"#, 3.0),
        // This process called nobody.
        (
            r#"invoice_app_charge_attempts_total{outcome="succeeded"}"#,
            0.0,
        ),
    ] {
        assert_eq!(app.metric(sample).await, Some(want), "{sample}");
    }
}

both_backends!(a_run_by_another_process_shows_in_the_replicas_metrics);
