//! What the chart's alerts read. They take the database's word, not one process's
//! counters: the monthly run of the chart's CronJob is a process no Prometheus scrapes.

use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use invoice_app::db::{self, schema};
use test_support::DbUrl;

use crate::helpers::{Backend, TestApp, pay_command, second_instance, spawn_app, spawn_app_with};
use test_support::{both_backends, postgres_only};

/// `invoice-app pay` (the CronJob's command) run as its own process: the serving
/// replica's metrics show the run, its invoices and its calls, though its own counters
/// saw none of them.
async fn a_run_by_another_process_shows_in_the_replicas_metrics(backend: Backend) {
    let app = spawn_app(backend).await;
    app.eur_invoices(1_000_000, 3).await;
    let out = pay_command(&app).output().expect("invoice-app pay runs");
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

/// The CronJob's pod stopped mid-run (SIGTERM, as at `activeDeadlineSeconds` or a node
/// drain): no call starts after the signal, the run closes saying so, every claim is
/// handed back, every charge made is recorded paid, and the Job fails (so Kubernetes
/// retries it). It used to exit at once, leaving the run `running` and its invoices
/// `processing`; then, with everything already claimed, it exited 0.
async fn stop_cli_mid_run(backend: Backend, invoices: i64) {
    let app = spawn_app_with(
        backend,
        |p| p.faults.latency = Duration::from_millis(400),
        |_| {},
    )
    .await;
    // Calls of 0.4 s, 16 at a time; stopped after about 1.2 s.
    app.eur_invoices(10_000_000, invoices).await;
    let child = pay_command(&app)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("invoice-app pay starts");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    let stopped_at = chrono::Utc::now().naive_utc();
    assert!(killed.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("joined")
        .expect("exited");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a stopped run is no success: {stdout}"
    );
    assert!(stdout.contains("shutting down"), "{stdout}");

    let paid = app.invoices("paid").await.len();
    assert!(
        paid > 0 && paid < usize::try_from(invoices).unwrap_or(0),
        "the stop did not land mid-run (paid {paid})"
    );
    assert!(
        app.invoices("processing").await.is_empty(),
        "claims left behind"
    );
    assert_eq!(
        app.provider().ledger().await.len(),
        paid,
        "every charge recorded paid"
    );
    assert_eq!(
        app.metric(r#"invoice_app_pay_runs{status="running"}"#)
            .await,
        Some(0.0)
    );
    assert_eq!(
        app.metric(r#"invoice_app_pay_runs{status="failed"}"#).await,
        Some(1.0)
    );
    // No call started once the signal was sent (a small margin for the signal's delivery).
    assert_eq!(attempts_started_after(&app, stopped_at).await, 0);
}

/// Attempts whose call started more than 100 ms after `t`.
async fn attempts_started_after(app: &TestApp, t: chrono::NaiveDateTime) -> i64 {
    use diesel::QueryDsl;
    use schema::payment_attempts::dsl;
    let pool = db::pool(&app.config.database_url, 1);
    let after = t + TimeDelta::milliseconds(100);
    db::run(&pool, move |c| {
        dsl::payment_attempts
            .filter(dsl::started_at.gt(after))
            .count()
            .get_result(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("attempts")
}

/// While it was still claiming.
async fn a_stopped_cli_run_closes_and_hands_back_its_claims(backend: Backend) {
    stop_cli_mid_run(backend, 200).await;
}

/// Everything claimed already (one batch): the invoices not called yet make it no success.
async fn a_stopped_cli_run_with_everything_claimed_fails(backend: Backend) {
    stop_cli_mid_run(backend, 60).await;
}

/// A synchronous `POST /invoices/pay` open when the server is told to stop: the run stops
/// calling at once (it used to go on for the 20 s the HTTP server drains requests, then
/// close `completed`), the client gets an answer, and the stop takes about one call.
async fn a_stopped_server_stops_its_synchronous_run_at_once(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |p| p.faults.latency = Duration::from_millis(400),
        |_| {},
    )
    .await;
    app.eur_invoices(10_000_000, 400).await;
    let (handle, base, serving) = second_instance(&app).await;
    let client = app.client.clone();
    let paying =
        tokio::spawn(async move { client.post(format!("{base}/invoices/pay")).send().await });
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let stopped_at = chrono::Utc::now().naive_utc();
    let stopping = std::time::Instant::now();
    handle.stop(true).await;
    serving.await.expect("task").expect("stopped cleanly");
    let took = stopping.elapsed();

    let answer = paying.await.expect("task").expect("answered, not cut off");
    assert_eq!(answer.status().as_u16(), 503);
    let body: serde_json::Value = answer.json().await.expect("json");
    assert!(body.to_string().contains("shutting down"), "{body}");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert_eq!(attempts_started_after(&app, stopped_at).await, 0);
    assert!(
        app.invoices("processing").await.is_empty(),
        "claims left behind"
    );
    let paid = app.invoices("paid").await.len();
    assert!(
        paid > 0 && paid < 400,
        "the stop did not land mid-run (paid {paid})"
    );
    assert_eq!(
        app.provider().ledger().await.len(),
        paid,
        "every charge recorded paid"
    );
    assert_eq!(
        app.metric(r#"invoice_app_pay_runs{status="failed"}"#).await,
        Some(1.0)
    );
}

/// Claims whose lease lapsed count as stuck only when their run is dead: a live run's
/// queued claims lapse while they wait (the lease is renewed as each call starts), and the
/// alert on stuck invoices must not fire for a run that is making progress.
async fn lapsed_claims_of_a_live_run_are_not_stuck(backend: Backend) {
    let app = spawn_app(backend).await;
    app.eur_invoices(1_000_000, 2).await;
    let pool = db::pool(&app.config.database_url, 1);
    let set = |heartbeat_age: TimeDelta| {
        let pool = pool.clone();
        async move {
            db::run(&pool, move |c| {
                use schema::{invoices, pay_runs};
                let now = Utc::now().naive_utc();
                diesel::delete(pay_runs::table).execute(c)?;
                diesel::insert_into(pay_runs::table)
                    .values((
                        pay_runs::id.eq("run-1"),
                        pay_runs::trigger.eq("api"),
                        pay_runs::status.eq("running"),
                        pay_runs::paid.eq(0),
                        pay_runs::failed.eq(0),
                        pay_runs::retry_later.eq(0),
                        pay_runs::started_at.eq(now - TimeDelta::hours(1)),
                        pay_runs::heartbeat_at.eq(now - heartbeat_age),
                    ))
                    .execute(c)?;
                diesel::update(invoices::table)
                    .set((
                        invoices::status.eq("processing"),
                        invoices::claimed_by.eq("worker-1"),
                        invoices::last_run_id.eq("run-1"),
                        invoices::lease_until.eq(now - TimeDelta::seconds(5)),
                    ))
                    .execute(c)
                    .map_err(anyhow::Error::from)
            })
            .await
            .expect("written")
        }
    };
    set(TimeDelta::seconds(1)).await;
    assert_eq!(
        app.metric("invoice_app_invoices_lease_expired").await,
        Some(0.0)
    );
    // The same claims once the run's heartbeat is older than a lease: nobody pays them.
    set(TimeDelta::hours(1)).await;
    assert_eq!(
        app.metric("invoice_app_invoices_lease_expired").await,
        Some(2.0)
    );
}

postgres_only!(postgres_a_hung_database_reads_as_down_within_the_scrape => a_hung_database_reads_as_down_within_the_scrape);

/// A database that hangs (here: a table locked by another session) reads as down within
/// the scrape, instead of holding the scrape open past Prometheus's timeout.
async fn a_hung_database_reads_as_down_within_the_scrape() {
    use diesel::{Connection, PgConnection};
    let app = TestApp::builder(Backend::Postgres).spawn().await;
    let DbUrl::Postgres(url) = app.db.url.clone() else {
        unreachable!("a PostgreSQL database")
    };
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let mut c = PgConnection::establish(&url).expect("connects");
        c.transaction::<_, diesel::result::Error, _>(|c| {
            diesel::sql_query("LOCK TABLE invoices IN ACCESS EXCLUSIVE MODE").execute(c)?;
            locked_tx.send(()).expect("told");
            std::thread::sleep(Duration::from_secs(8));
            Ok(())
        })
        .expect("held");
    });
    locked_rx.recv().expect("locked");
    let started = std::time::Instant::now();
    let up = app.metric("invoice_app_database_up").await;
    let took = started.elapsed();
    assert_eq!(up, Some(0.0));
    assert!(took < Duration::from_secs(7), "the scrape took {took:?}");
    holder.join().expect("released");
    assert_eq!(app.metric("invoice_app_database_up").await, Some(1.0));
}

/// Another run holding the first `held` invoices (by id) until `lease` from now, as
/// `status` with a fresh heartbeat: a run whose process was killed a moment ago looks
/// exactly like a live one.
async fn another_run_holds(app: &TestApp, held: i64, lease: TimeDelta) {
    let pool = db::pool(&app.config.database_url, 1);
    db::run(&pool, move |c| {
        use schema::{invoices, pay_runs};
        let now = Utc::now().naive_utc();
        diesel::insert_into(pay_runs::table)
            .values((
                pay_runs::id.eq("other-run"),
                pay_runs::trigger.eq("cli"),
                pay_runs::status.eq("running"),
                pay_runs::paid.eq(0),
                pay_runs::failed.eq(0),
                pay_runs::retry_later.eq(0),
                pay_runs::started_at.eq(now - TimeDelta::seconds(2)),
                pay_runs::worker_id.eq("other-pod"),
                pay_runs::heartbeat_at.eq(now),
            ))
            .execute(c)?;
        let first: Vec<String> = invoices::table
            .select(invoices::id)
            .order(invoices::id)
            .limit(held)
            .load(c)?;
        diesel::update(invoices::table.filter(invoices::id.eq_any(first)))
            .set((
                invoices::status.eq("processing"),
                invoices::claimed_by.eq("other-pod"),
                invoices::last_run_id.eq("other-run"),
                invoices::lease_until.eq(now + lease),
            ))
            .execute(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("another run's claims");
}

/// The CronJob's Job retried after its first pod was killed mid-run (issue 20, defect 3):
/// the killed run still reads `running` with a fresh heartbeat and its claims are leased
/// for a while yet. The new run waits for them to lapse and takes them, so its exit 0
/// `completed` means every invoice of the period was tried; it used to complete at once
/// with them left `processing` (some of them charged).
async fn a_cli_run_waits_for_the_claims_of_a_killed_run(backend: Backend) {
    let app = spawn_app(backend).await;
    app.eur_invoices(1_000_000, 3).await;
    another_run_holds(&app, 2, TimeDelta::seconds(3)).await;

    let started = std::time::Instant::now();
    let out = pay_command(&app).output().expect("invoice-app pay runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        app.invoices("paid").await.len(),
        3,
        "exit 0 with the killed run's claims left behind: {:?}",
        app.invoices("processing").await
    );
    assert_eq!(app.provider().ledger().await.len(), 3);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "completed before the killed run's claims lapsed ({:?})",
        started.elapsed()
    );
}

/// Another run hands an invoice back (it failed, or its process is stopping) behind this
/// run's cursor, after this run has claimed everything else (issue 20 audit: the run, a
/// period's or the CronJob's, completed with the invoice pending and never called).
async fn a_cli_run_takes_what_another_run_hands_back_behind_it(backend: Backend) {
    let app = spawn_app(backend).await;
    app.eur_invoices(1_000_000, 4).await;
    another_run_holds(&app, 1, TimeDelta::seconds(60)).await;

    let cli = pay_command(&app)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("invoice-app pay starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.invoices("paid").await.len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the other 3 were not paid"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The other run fails and hands its claim back, as `release_run` does.
    let pool = db::pool(&app.config.database_url, 1);
    db::run(&pool, move |c| {
        use schema::invoices;
        diesel::update(invoices::table.filter(invoices::status.eq("processing")))
            .set((
                invoices::status.eq("pending"),
                invoices::claimed_by.eq(None::<String>),
                invoices::lease_until.eq(None::<chrono::NaiveDateTime>),
            ))
            .execute(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("handed back");

    let out = cli.wait_with_output().expect("invoice-app pay ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        app.invoices("paid").await.len(),
        4,
        "completed with the handed-back invoice untried: {:?}",
        app.invoices("pending").await
    );
    assert_eq!(app.provider().ledger().await.len(), 4);
}

both_backends!(
    a_cli_run_takes_what_another_run_hands_back_behind_it,
    a_cli_run_waits_for_the_claims_of_a_killed_run,
    a_run_by_another_process_shows_in_the_replicas_metrics,
    a_stopped_cli_run_closes_and_hands_back_its_claims,
    a_stopped_cli_run_with_everything_claimed_fails,
    a_stopped_server_stops_its_synchronous_run_at_once,
    lapsed_claims_of_a_live_run_are_not_stuck,
);
