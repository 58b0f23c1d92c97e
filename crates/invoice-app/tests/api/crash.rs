//! invoice-app as a real process, killed with SIGKILL in the middle of a pay run and
//! started again: every invoice ends paid exactly once.

use std::collections::HashMap;
use std::time::Duration;

use api_contract::Currency;
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use invoice_app::db::{
    self, schema::pay_runs::dsl as runs, schema::payment_attempts::dsl as attempts,
};
use test_support::{DbUrl, Service, TestDb, TestProvider, postgres_only};

use crate::helpers::{Backend, api_client, create_eur_invoices, money, start_binary, wait_ready};

const INVOICES: i64 = 2000;
const SECRET: &str = "crash-test-token-never-in-logs-42";

postgres_only!(postgres_sigkill_mid_run_then_restart_pays_each_invoice_once => sigkill_mid_run_then_restart_pays_each_invoice_once);

async fn sigkill_mid_run_then_restart_pays_each_invoice_once() {
    let provider = TestProvider::spawn(Backend::Postgres, |c| {
        c.callers = Some(
            payment_provider::auth::CallerTokens::parse(&format!("invoice-app:{SECRET}"))
                .expect("valid"),
        );
    })
    .await;
    let funded = 1_000_000_000;
    provider.fund("C001", money(funded, Currency::Eur)).await;
    let db = TestDb::create(Backend::Postgres, Service::InvoiceApp);
    let DbUrl::Postgres(db_url) = &db.url else {
        unreachable!("PostgreSQL")
    };
    let pool = db::pool(&invoice_app::db::DbUrl::Postgres(db_url.clone()), 2);
    db::run(&pool, db::migrate).await.expect("migrated");
    create_eur_invoices(&pool, INVOICES).await;

    let log = std::env::temp_dir().join(format!("crash-{}.log", uuid::Uuid::new_v4().simple()));
    let client = api_client();
    let (mut first, base) = start_binary(db_url, &provider.base_url, SECRET, &log, &[]);
    wait_ready(&client, &base).await;
    let started = client
        .post(format!("{base}/pay-runs"))
        .send()
        .await
        .expect("sent");
    assert_eq!(started.status().as_u16(), 202);
    let killed_run = started
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .trim_start_matches("/pay-runs/")
        .to_owned();
    // Kill it once a good part of the run is done, mid-flight.
    for _ in 0..600 {
        if provider.ledger().await.len() >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let charged_before = provider.ledger().await.len();
    assert!(
        charged_before < INVOICES as usize,
        "the run finished before the kill; nothing was tested"
    );

    // The crash left attempts that were started and never completed: visible, not silent.
    let unfinished: i64 = db::run(&pool, |c| {
        attempts::payment_attempts
            .filter(attempts::outcome.eq("started"))
            .count()
            .get_result(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("attempts");

    let (mut second, base) = start_binary(db_url, &provider.base_url, SECRET, &log, &[]);
    wait_ready(&client, &base).await;
    // Claims of the dead process are taken over once their lease (10 s) runs out.
    let mut remaining = i64::MAX;
    for _ in 0..60 {
        let report: serde_json::Value = client
            .post(format!("{base}/invoices/pay"))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("report");
        assert_eq!(report["summary"]["failed"], 0, "{report}");
        remaining = db::run(&pool, |c| {
            invoice_app::db::schema::invoices::table
                .filter(invoice_app::db::schema::invoices::status.ne("paid"))
                .count()
                .get_result(c)
                .map_err(anyhow::Error::from)
        })
        .await
        .expect("count");
        if remaining == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // One more run after the dead one's heartbeat has lapsed: whoever opens a run closes
    // the runs of dead processes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let last = client
        .post(format!("{base}/invoices/pay"))
        .send()
        .await
        .expect("sent");
    assert_eq!(last.status().as_u16(), 200);
    second.kill().expect("stopped");
    second.wait().expect("reaped");

    // The records tell what happened: the killed run is closed as abandoned, every payment
    // is counted by exactly one run, and the trail holds calls made, not calls planned.
    let killed = killed_run.clone();
    let status: String = db::run(&pool, move |c| {
        runs::pay_runs
            .find(killed)
            .select(runs::status)
            .first(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("killed run");
    assert_eq!(status, "abandoned", "the killed run is closed");
    let open: i64 = db::run(&pool, |c| {
        runs::pay_runs
            .filter(runs::status.eq("running"))
            .count()
            .get_result(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("runs");
    assert_eq!(open, 0, "no run left running");
    assert_eq!(
        crate::records::run_totals(&pool).await,
        (INVOICES, 0),
        "the runs' counts add up to the invoices paid"
    );
    let trail: Vec<(String, String)> = db::run(&pool, |c| {
        attempts::payment_attempts
            .select((attempts::idempotency_key, attempts::outcome))
            .load(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("attempts");
    assert!(
        trail.iter().all(|(_, outcome)| outcome != "started"),
        "attempts left started after every run was closed"
    );
    // Every recorded call reached the provider, but the few in flight at the kill that had
    // not yet left (there are at most PAY_CONCURRENCY in flight).
    let seen: std::collections::HashSet<String> = payment_provider::db::run(&provider.pool, |c| {
        use payment_provider::db::schema::idempotency_keys::dsl as keys;
        keys::idempotency_keys
            .select(keys::idempotency_key)
            .load(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("provider keys")
    .into_iter()
    .collect();
    let never_sent = trail.iter().filter(|(key, _)| !seen.contains(key)).count();
    assert!(
        never_sent <= 16,
        "{never_sent} attempts on record for calls the provider never saw"
    );

    assert_eq!(remaining, 0, "invoices left unpaid after the restart");
    let ledger = provider.ledger().await;
    let mut per_invoice: HashMap<&str, usize> = HashMap::new();
    for charge in &ledger {
        *per_invoice.entry(charge.invoice_id.as_str()).or_default() += 1;
    }
    assert_eq!(per_invoice.len(), INVOICES as usize);
    assert!(
        per_invoice.values().all(|n| *n == 1),
        "an invoice was charged twice"
    );
    let total: i64 = (0..INVOICES).map(|i| 100 + i).sum();
    assert_eq!(provider.balance("C001").await, Some(funded - total));
    assert!(
        unfinished > 0,
        "the kill left no unfinished attempt on record (killed between calls?)"
    );

    // The token was used on every call and logged on none, even at debug level.
    let logs = std::fs::read_to_string(&log).expect("logs");
    assert!(logs.contains("invoice-app listening"), "logs were captured");
    assert!(
        !logs.contains(SECRET),
        "the provider token appeared in invoice-app's logs"
    );
    let _ = std::fs::remove_file(&log);
}
