//! The money path under stalls, cut connections and takeovers, with the real binary on
//! PostgreSQL: a replica frozen past its lease (SIGSTOP), every connection cut
//! (`pg_terminate_backend`), a peer frozen inside a transaction (a session holding a lock),
//! and a database reset. The checks read the databases, not only the API's answers.

use std::process::Command;
use std::time::Duration;

use api_contract::Currency;
use chrono::NaiveDateTime;
use diesel::{
    Connection, ExpressionMethods, NullableExpressionMethods, PgConnection, QueryDsl, RunQueryDsl,
};
use invoice_app::db::schema::{invoices::dsl as inv, pay_runs::dsl as runs};
use invoice_app::db::{self, schema::payment_attempts::dsl as attempts};
use serde_json::Value;
use test_support::{DbUrl, Service, TestDb, TestProvider, postgres_only};

use crate::helpers::{Backend, api_client, create_eur_invoices, money, start_binary, wait_ready};

const SECRET: &str = "takeover-test-token-never-logged";

/// A provider answering each charge after `latency`, and an invoice-app database holding
/// `invoices` pending invoices.
struct Setup {
    provider: TestProvider,
    _db: TestDb,
    db_url: String,
    log: std::path::PathBuf,
}

impl Setup {
    async fn new(latency: Duration, invoices: i64) -> Setup {
        let provider = TestProvider::spawn(Backend::Postgres, |c| {
            c.callers = Some(
                payment_provider::auth::CallerTokens::parse(&format!("invoice-app:{SECRET}"))
                    .expect("valid"),
            );
            c.faults.latency = latency;
        })
        .await;
        provider
            .fund("C001", money(1_000_000_000, Currency::Eur))
            .await;
        let db = TestDb::create(Backend::Postgres, Service::InvoiceApp);
        let DbUrl::Postgres(db_url) = &db.url else {
            unreachable!("PostgreSQL")
        };
        let db_url = db_url.clone();
        let pool = db::pool(&db::DbUrl::Postgres(db_url.clone()), 1);
        db::run(&pool, db::migrate).await.expect("migrated");
        create_eur_invoices(&pool, invoices).await;
        let log =
            std::env::temp_dir().join(format!("takeover-{}.log", uuid::Uuid::new_v4().simple()));
        Setup {
            provider,
            _db: db,
            db_url,
            log,
        }
    }

    /// A connection of the test's own, outside every pool the services hold.
    fn connect(&self) -> PgConnection {
        PgConnection::establish(&self.db_url).expect("test connection")
    }

    async fn wait_for_charges(&self, at_least: usize) {
        for _ in 0..1500 {
            if self.provider.ledger().await.len() >= at_least {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "fewer than {at_least} charges after 30 s; log: {}",
            self.log.display()
        );
    }

    /// Cuts every connection to invoice-app's database but the caller's, as a failover or
    /// a restarted server does.
    fn cut_connections(&self) -> usize {
        #[derive(diesel::QueryableByName)]
        struct Cut {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            cut: i64,
        }
        let cut: Cut = diesel::sql_query(
            "SELECT count(pg_terminate_backend(pid)) AS cut FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .get_result(&mut self.connect())
        .expect("connections cut");
        usize::try_from(cut.cut).unwrap_or_default()
    }
}

/// invoice-app as a real process on `Setup`'s databases; SIGKILLed when dropped, so a
/// failed assertion leaves no process behind.
struct Replica {
    child: std::process::Child,
    base: String,
}

impl Replica {
    async fn start(setup: &Setup, client: &reqwest::Client, extra: &[(&str, &str)]) -> Replica {
        let (child, base) = start_binary(
            &setup.db_url,
            &setup.provider.base_url,
            SECRET,
            &setup.log,
            extra,
        );
        let replica = Replica { child, base };
        wait_ready(client, &replica.base).await;
        replica
    }

    fn signal(&self, sig: &str) {
        let done = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(done.success(), "kill {sig}");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The run a synchronous `POST /invoices/pay` names in its 503.
async fn failed_run_named_in(answer: reqwest::Response) -> String {
    assert_eq!(answer.status().as_u16(), 503);
    let body: Value = answer.json().await.expect("problem");
    let detail = body["detail"].as_str().unwrap_or_default().to_owned();
    let run = detail
        .split("pay run ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    assert!(!run.is_empty(), "the 503 names no run: {body}");
    run
}

async fn start_run(client: &reqwest::Client, base: &str) -> String {
    let started = client
        .post(format!("{base}/pay-runs"))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .expect("POST /pay-runs answered within 15 s");
    assert_eq!(started.status().as_u16(), 202);
    let body: Value = started.json().await.expect("JSON");
    body["id"].as_str().expect("run id").to_owned()
}

fn attempts_of(c: &mut PgConnection, run: &str, outcome: &str) -> i64 {
    attempts::payment_attempts
        .filter(attempts::pay_run_id.eq(run))
        .filter(attempts::outcome.eq(outcome))
        .count()
        .get_result(c)
        .expect("attempts")
}

fn held_by_run(c: &mut PgConnection, run: &str) -> i64 {
    inv::invoices
        .filter(inv::status.eq("processing"))
        .filter(inv::last_run_id.eq(run))
        .count()
        .get_result(c)
        .expect("invoices")
}

postgres_only!(postgres_a_run_closed_while_frozen_makes_no_call_after_it_wakes => a_run_closed_while_frozen_makes_no_call_after_it_wakes);

/// Replica A is frozen past its lease mid-run, and its run is closed as abandoned (what
/// another replica's housekeeping does). When A wakes it must not call again for that
/// run: no attempt of it starts after the closure, and none is left `started`.
async fn a_run_closed_while_frozen_makes_no_call_after_it_wakes() {
    let setup = Setup::new(Duration::from_millis(200), 400).await;
    let client = api_client();
    let a = Replica::start(&setup, &client, &[("PAY_CONCURRENCY", "4")]).await;
    let base = a.base.clone();
    let run = start_run(&client, &base).await;
    setup.wait_for_charges(8).await;
    a.signal("-STOP");
    // Past the lease (10 s) and the heartbeat: A's run looks dead to everyone.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let mut c = setup.connect();
    let closed_at: NaiveDateTime = c
        .transaction(|c| {
            let closed: NaiveDateTime = diesel::update(
                runs::pay_runs
                    .filter(runs::id.eq(&run))
                    .filter(runs::status.eq("running")),
            )
            .set((
                runs::status.eq("abandoned"),
                runs::error.eq("closed by another replica (the test)"),
                runs::finished_at.eq(diesel::dsl::sql("now() AT TIME ZONE 'utc'")),
            ))
            .returning(runs::finished_at.assume_not_null())
            .get_result(c)?;
            diesel::update(
                attempts::payment_attempts
                    .filter(attempts::pay_run_id.eq(&run))
                    .filter(attempts::outcome.eq("started")),
            )
            .set(attempts::outcome.eq("interrupted"))
            .execute(c)?;
            Ok::<_, diesel::result::Error>(closed)
        })
        .expect("run closed");
    a.signal("-CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(a);

    let after: i64 = attempts::payment_attempts
        .filter(attempts::pay_run_id.eq(&run))
        .filter(attempts::started_at.gt(closed_at))
        .count()
        .get_result(&mut c)
        .expect("attempts");
    assert_eq!(
        after,
        0,
        "calls made for run {run} after it was closed; log: {}",
        setup.log.display()
    );
    assert_eq!(
        attempts_of(&mut c, &run, "started"),
        0,
        "attempts left started"
    );
}

postgres_only!(postgres_a_run_whose_connections_are_cut_closes_failed_and_hands_back => a_run_whose_connections_are_cut_closes_failed_and_hands_back);

/// Every connection is cut in the middle of a synchronous run. The run fails, and says so
/// at once: its row is `failed` with the error (not `running`, later "died"), it hands
/// back the claims it held, leaves no attempt `started`, and the caller's 503 names it.
async fn a_run_whose_connections_are_cut_closes_failed_and_hands_back() {
    let setup = Setup::new(Duration::from_millis(50), 600).await;
    let client = api_client();
    let a = Replica::start(&setup, &client, &[("PAY_CONCURRENCY", "4")]).await;
    let base = a.base.clone();
    let pay = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            client
                .post(format!("{base}/invoices/pay"))
                .timeout(Duration::from_secs(60))
                .send()
                .await
        })
    };
    setup.wait_for_charges(20).await;
    assert!(setup.cut_connections() > 0, "nothing to cut");
    let run = failed_run_named_in(pay.await.expect("task").expect("answered")).await;

    let mut c = setup.connect();
    let (status, error): (String, Option<String>) = runs::pay_runs
        .find(&run)
        .select((runs::status, runs::error))
        .first(&mut c)
        .expect("run row");
    assert_eq!(status, "failed", "{error:?}; log: {}", setup.log.display());
    assert!(error.is_some_and(|e| !e.is_empty()));
    assert_eq!(
        attempts_of(&mut c, &run, "started"),
        0,
        "attempts left started"
    );
    assert_eq!(
        held_by_run(&mut c, &run),
        0,
        "claims still held by the failed run"
    );
    drop(a);
}

postgres_only!(postgres_a_run_whose_end_outlasts_an_outage_is_recorded_failed_by_its_process => a_run_whose_end_outlasts_an_outage_is_recorded_failed_by_its_process);

/// The database refuses every connection for longer than a run's close is tried before its
/// caller is answered, and longer than a lease (the outside audit of issue 20: after 25 s
/// the same, live process closed its own run as abandoned, "it died", claims kept). The
/// close goes on in the background: once the database is back the run reads `failed`, and
/// its claims are handed back.
async fn a_run_whose_end_outlasts_an_outage_is_recorded_failed_by_its_process() {
    let setup = Setup::new(Duration::from_millis(50), 600).await;
    let client = api_client();
    let a = Replica::start(&setup, &client, &[("PAY_CONCURRENCY", "4")]).await;
    let pay = {
        let (client, base) = (client.clone(), a.base.clone());
        tokio::spawn(async move {
            client
                .post(format!("{base}/invoices/pay"))
                .timeout(Duration::from_secs(90))
                .send()
                .await
        })
    };
    setup.wait_for_charges(20).await;
    let name = setup
        .db_url
        .rsplit('/')
        .next()
        .and_then(|n| n.split('?').next())
        .expect("database name")
        .to_owned();
    let admin_url = setup.db_url.replacen(&format!("/{name}"), "/postgres", 1);
    let mut admin = PgConnection::establish(&admin_url).expect("admin connection");
    let allow = |c: &mut PgConnection, on: bool| {
        diesel::sql_query(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {on}"))
            .execute(c)
            .expect("altered");
    };
    allow(&mut admin, false);
    diesel::sql_query(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .execute(&mut admin)
    .expect("connections cut");
    // Past the close's tries and past a lease (10 s): the heartbeat reads dead by then.
    let run = failed_run_named_in(pay.await.expect("task").expect("answered")).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    allow(&mut admin, true);

    let mut c = setup.connect();
    let mut row: (String, Option<String>) = ("running".to_owned(), None);
    for _ in 0..150 {
        row = runs::pay_runs
            .find(&run)
            .select((runs::status, runs::error))
            .first(&mut c)
            .expect("run row");
        if row.0 != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(row.0, "failed", "{:?}; log: {}", row.1, setup.log.display());
    assert_eq!(
        held_by_run(&mut c, &run),
        0,
        "claims kept by the failed run"
    );
    assert_eq!(
        attempts_of(&mut c, &run, "started"),
        0,
        "attempts left started"
    );
    drop(a);
}

postgres_only!(postgres_a_peer_frozen_in_a_transaction_blocks_nobody => a_peer_frozen_in_a_transaction_blocks_nobody);

/// A peer frozen inside a transaction holds the row of a run that looks dead. A new run
/// must still start and finish: the housekeeping that would close that run waits at most
/// the lock timeout, and never holds the run slot hostage.
async fn a_peer_frozen_in_a_transaction_blocks_nobody() {
    let setup = Setup::new(Duration::ZERO, 50).await;
    let mut c = setup.connect();
    diesel::sql_query(
        "INSERT INTO pay_runs (id, trigger, status, paid, failed, retry_later, started_at, \
         worker_id, heartbeat_at) VALUES ('0190dead-0000-7000-8000-000000000001', 'api', \
         'running', 0, 0, 0, now() - interval '1 hour', 'frozen', now() - interval '1 hour')",
    )
    .execute(&mut c)
    .expect("a run whose process looks dead");
    let mut frozen = setup.connect();
    diesel::sql_query("BEGIN")
        .execute(&mut frozen)
        .expect("begin");
    diesel::sql_query("SELECT id FROM pay_runs FOR UPDATE")
        .execute(&mut frozen)
        .expect("locked");

    let client = api_client();
    let a = Replica::start(
        &setup,
        &client,
        &[("DATABASE_LOCK_TIMEOUT_MS", "1000"), ("PAY_MAX_RUNS", "1")],
    )
    .await;
    let base = a.base.clone();
    for _ in 0..2 {
        let run = start_run(&client, &base).await;
        let mut finished = None;
        for _ in 0..150 {
            let (code, body) = {
                let r = client
                    .get(format!("{base}/pay-runs/{run}"))
                    .send()
                    .await
                    .expect("sent");
                (r.status().as_u16(), r.json::<Value>().await.expect("JSON"))
            };
            assert_eq!(code, 200);
            if body["status"] != "running" {
                finished = Some(body);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let finished = finished.expect("the run finished within 15 s");
        assert_eq!(finished["status"], "completed", "{finished}");
    }
    assert_eq!(setup.provider.ledger().await.len(), 50);
    diesel::sql_query("ROLLBACK")
        .execute(&mut frozen)
        .expect("rollback");
    drop(a);
}

postgres_only!(postgres_requests_after_a_database_reset_get_fresh_connections => requests_after_a_database_reset_get_fresh_connections);

/// After every pooled connection died (a database restart), the next requests get fresh
/// connections: reads at once (repeated once on a fresh connection), writes after them.
async fn requests_after_a_database_reset_get_fresh_connections() {
    let setup = Setup::new(Duration::ZERO, 20).await;
    let client = api_client();
    let a = Replica::start(&setup, &client, &[("DATABASE_POOL_SIZE", "5")]).await;
    let base = a.base.clone();
    // Several connections open and idle in the pool.
    let warm: Vec<_> = (0..20)
        .map(|_| client.get(format!("{base}/invoices?limit=5")).send())
        .collect();
    for answer in futures_util::future::join_all(warm).await {
        assert_eq!(answer.expect("sent").status().as_u16(), 200);
    }
    assert!(
        setup.cut_connections() >= 2,
        "too few pooled connections to test"
    );
    for i in 0..10 {
        let answer = client
            .get(format!("{base}/invoices?limit=5"))
            .send()
            .await
            .expect("sent");
        assert_eq!(answer.status().as_u16(), 200, "read {i} after the reset");
    }
    let created = client
        .post(format!("{base}/invoices"))
        .json(&serde_json::json!({"customer_id": "C001", "amount": {"minor_units": 100, "currency": "EUR"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status().as_u16(), 201, "write after the reset");
    drop(a);
}

/// libfaketime, which shifts one process's clock (`LD_PRELOAD`, `FAKETIME`); `None` where
/// it is not installed (Debian: libfaketime), which fails the test under `CI=true`.
fn libfaketime() -> Option<std::path::PathBuf> {
    let found = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|path| path.is_file());
    if found.is_none() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "libfaketime is needed under CI=true (Debian: apt-get install libfaketime)"
        );
        eprintln!("clock-skew test SKIPPED: libfaketime is not installed");
    }
    found
}

/// The runs that called each invoice, from the audit trail.
fn callers_per_invoice(c: &mut PgConnection) -> std::collections::HashMap<String, Vec<String>> {
    let rows: Vec<(String, String)> = attempts::payment_attempts
        .select((attempts::invoice_id, attempts::pay_run_id))
        .distinct()
        .load(c)
        .expect("attempts");
    let mut callers: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (invoice, run) in rows {
        callers.entry(invoice).or_default().push(run);
    }
    callers
}

postgres_only!(
    postgres_a_replica_25s_ahead_takes_no_live_claim => a_replica_25s_ahead_takes_no_live_claim,
    postgres_a_replica_25s_behind_loses_no_live_claim => a_replica_25s_behind_loses_no_live_claim,
);

/// A replica whose clock runs 25 s ahead (libfaketime) starts a run while another replica's
/// run holds claims: by its own clock those leases (10 s) and that run's heartbeat are long
/// past, by the database's they are live. It must neither close the live run nor call its
/// invoices. (Before the database's clock decided: the live run closed as abandoned, its
/// invoices called by both runs.)
async fn a_replica_25s_ahead_takes_no_live_claim() {
    skewed_replicas("+25s", false).await;
}

/// The other way round: the replica 25 s behind pays first, and writes leases and
/// heartbeats that look 15 s stale to everyone else the moment they are written. A run of
/// a replica on time must leave them alone.
async fn a_replica_25s_behind_loses_no_live_claim() {
    skewed_replicas("-25s", true).await;
}

/// Two replicas, one of them `skew` off, pay 12 invoices at 300 ms a charge, one at a
/// time each; the skewed one starts first when `skewed_first`. Every invoice is called by
/// one run only, both runs complete, one charge each.
async fn skewed_replicas(skew: &str, skewed_first: bool) {
    let Some(faketime) = libfaketime() else {
        return;
    };
    let setup = Setup::new(Duration::from_millis(300), 12).await;
    let client = api_client();
    let faketime = faketime.to_string_lossy().into_owned();
    let skewed = [
        ("PAY_CONCURRENCY", "1"),
        ("CHARGE_TIMEOUT_MS", "2000"),
        ("LD_PRELOAD", faketime.as_str()),
        ("FAKETIME", skew),
        // Timers and the runtime keep the real monotonic clock; only the wall clock is off.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let on_time = &skewed[..2];
    let (first_env, second_env) = if skewed_first {
        (&skewed[..], on_time)
    } else {
        (on_time, &skewed[..])
    };
    let first = Replica::start(&setup, &client, first_env).await;
    let first_run = start_run(&client, &first.base).await;
    setup.wait_for_charges(2).await;
    let second = Replica::start(&setup, &client, second_env).await;
    let second_run = start_run(&client, &second.base).await;

    let mut c = setup.connect();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let statuses = loop {
        let statuses: Vec<String> = runs::pay_runs
            .filter(runs::id.eq_any([&first_run, &second_run]))
            .select(runs::status)
            .load(&mut c)
            .expect("runs");
        if statuses.iter().all(|s| s != "running") || std::time::Instant::now() > deadline {
            break statuses;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop((first, second));
    let log = setup.log.display();
    assert_eq!(
        statuses,
        ["completed", "completed"],
        "a run was closed or never ended; log: {log}"
    );
    let twice: Vec<_> = callers_per_invoice(&mut c)
        .into_iter()
        .filter(|(_, runs)| runs.len() > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "invoices called by both runs (a live claim taken over): {twice:?}; log: {log}"
    );
    let ledger = setup.provider.ledger().await;
    assert_eq!(ledger.len(), 12, "one charge each; log: {log}");
    let paid: i64 = inv::invoices
        .filter(inv::status.eq("paid"))
        .count()
        .get_result(&mut c)
        .expect("invoices");
    assert_eq!(paid, 12);
}
