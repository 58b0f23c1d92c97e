//! Billing periods: each fire time of the schedule is paid by one run across replicas, a
//! period that fell due while no replica was up is paid by the first one up, and a period
//! whose run died is taken over. Read from the `billing_periods` and `pay_runs` tables.

use std::str::FromStr;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use diesel::{ExpressionMethods, JoinOnDsl, NullableExpressionMethods, QueryDsl, RunQueryDsl};
use invoice_app::db::{
    self, schema::billing_periods::dsl as periods, schema::pay_runs::dsl as runs,
};
use invoice_app::startup::Application;

use api_contract::Currency;

use crate::helpers::{Backend, TestApp, money, spawn_app_with, test_config};
use test_support::both_backends;

const MONTHLY: &str = "0 0 0 1 * *";

/// The period the monthly schedule owes now: the latest 1st of a month at 00:00 UTC.
fn due_now() -> String {
    let schedule = cron::Schedule::from_str(MONTHLY).expect("valid");
    schedule
        .after(&Utc::now())
        .next_back()
        .expect("a past fire time")
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn insert_period(pool: &db::DbPool, period: &str, kind: &str, run: Option<&str>) {
    let (period, kind, run) = (period.to_owned(), kind.to_owned(), run.map(str::to_owned));
    db::run(pool, move |c| {
        diesel::insert_into(periods::billing_periods)
            .values((
                periods::period.eq(period),
                periods::kind.eq(kind),
                periods::run_id.eq(run),
                periods::taken_at.eq(Utc::now().naive_utc()),
            ))
            .execute(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("period inserted");
}

/// Scheduled runs, as (period, run status).
/// The scheduled periods and their runs' status, once no run of theirs is still closing
/// (a run's invoices show paid a moment before its row says completed).
async fn scheduled(pool: &db::DbPool) -> Vec<(String, String)> {
    for _ in 0..100 {
        let periods = scheduled_now(pool).await;
        if periods.iter().all(|(_, status)| status != "running") {
            return periods;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    scheduled_now(pool).await
}

async fn scheduled_now(pool: &db::DbPool) -> Vec<(String, String)> {
    db::run(pool, |c| {
        periods::billing_periods
            .inner_join(runs::pay_runs.on(periods::run_id.eq(runs::id.nullable())))
            .filter(runs::trigger.eq("schedule"))
            .select((periods::period, runs::status))
            .load(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("periods")
}

/// Starts another replica with the monthly schedule on the same database.
async fn replica(app: &TestApp) -> invoice_app::startup::StopHandle {
    let mut config = test_config(&app.db, &app.provider().base_url);
    config.pay_schedule = Some(cron::Schedule::from_str(MONTHLY).expect("valid"));
    let replica = Application::build(config).await.expect("replica starts");
    let handle = replica.handle();
    tokio::spawn(replica.run_until_stopped());
    handle
}

async fn wait_until_paid(app: &TestApp, count: usize) {
    for _ in 0..200 {
        if app.invoices("paid").await.len() == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the scheduled run did not pay the {count} invoices");
}

async fn period_missed_while_down_is_paid_once_by_the_first_replica_up(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}, |_| {}).await;
    app.eur_invoices(1_000_000, 3).await;
    let pool = db::pool(&app.config.database_url, 1);
    // Replicas have run before (a baseline a month ago), but none was up on the 1st.
    insert_period(&pool, "2000-01-01T00:00:00Z", "baseline", None).await;

    let first = replica(&app).await;
    wait_until_paid(&app, 3).await;
    let second = replica(&app).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(
        scheduled(&pool).await,
        vec![(due_now(), "completed".to_owned())],
        "the missed period is paid by exactly one run"
    );
    let schedule_runs: i64 = db::run(&pool, |c| {
        runs::pay_runs
            .filter(runs::trigger.eq("schedule"))
            .count()
            .get_result(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("runs");
    assert_eq!(schedule_runs, 1, "one scheduled run across both replicas");
    assert_eq!(app.provider().ledger().await.len(), 3);
    first.stop(true).await;
    second.stop(true).await;
}

async fn first_start_owes_no_period(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}, |_| {}).await;
    app.eur_invoices(1_000_000, 2).await;
    let pool = db::pool(&app.config.database_url, 1);

    let handle = replica(&app).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let seen: Vec<(String, String)> = db::run(&pool, |c| {
        periods::billing_periods
            .select((periods::period, periods::kind))
            .load(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("periods");
    assert_eq!(seen, vec![(due_now(), "baseline".to_owned())]);
    assert_eq!(app.invoices("pending").await.len(), 2, "nothing paid");
    handle.stop(true).await;
}

async fn period_whose_run_died_is_taken_over(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}, |_| {}).await;
    app.eur_invoices(1_000_000, 2).await;
    let pool = db::pool(&app.config.database_url, 1);
    insert_period(&pool, "2000-01-01T00:00:00Z", "baseline", None).await;
    // This period's run was closed as abandoned (its process died mid-run).
    let dead = uuid::Uuid::now_v7().to_string();
    let row = dead.clone();
    db::run(&pool, move |c| {
        diesel::insert_into(runs::pay_runs)
            .values((
                runs::id.eq(row),
                runs::trigger.eq("schedule"),
                runs::status.eq("abandoned"),
                runs::paid.eq(0),
                runs::failed.eq(0),
                runs::retry_later.eq(0),
                runs::started_at.eq(Utc::now().naive_utc()),
            ))
            .execute(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("dead run");
    insert_period(&pool, &due_now(), "run", Some(&dead)).await;

    let handle = replica(&app).await;
    wait_until_paid(&app, 2).await;

    assert_eq!(
        scheduled(&pool).await,
        vec![(due_now(), "completed".to_owned())],
        "the period now names the run that paid it"
    );
    handle.stop(true).await;
}

async fn attempts_say_whether_the_request_left(backend: Backend) {
    use invoice_app::db::schema::payment_attempts::dsl as attempts;
    let app = spawn_app_with(
        backend,
        |p| p.faults.latency = Duration::from_millis(1500),
        |a| {
            a.charge_timeout = Duration::from_millis(500);
            a.retry_max_elapsed = Duration::from_secs(1);
        },
    )
    .await;
    app.eur_invoices(1_000_000, 1).await;
    let pool = db::pool(&app.config.database_url, 1);
    let sent = || async {
        db::run(&pool, |c| {
            attempts::payment_attempts
                .select((attempts::outcome, attempts::sent))
                .order(attempts::started_at)
                .load::<(String, Option<String>)>(c)
                .map_err(anyhow::Error::from)
        })
        .await
        .expect("attempts")
    };

    // Slower than the client waits: it left, and nobody knows whether it arrived.
    app.pay().await;
    let timed_out = sent().await;
    assert_eq!(
        timed_out.first(),
        Some(&("unknown".to_owned(), Some("unknown".to_owned())))
    );
    // Retries meet the first call still in flight (409): those answers came back.
    assert!(
        timed_out
            .iter()
            .all(|(o, s)| (o == "unknown") == (s.as_deref() == Some("unknown")) && s.is_some()),
        "{timed_out:?}"
    );
    // Refused at connect: nothing left.
    app.provider().handle.stop(false).await;
    app.pay().await;
    let all = sent().await;
    assert!(
        all[timed_out.len()..]
            .iter()
            .all(|(o, s)| o == "retryable" && s.as_deref() == Some("no")),
        "{all:?}"
    );
}

async fn upgraded_database_owes_the_period_its_old_release_did_not_pay(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}, |_| {}).await;
    // Runs were made before this release (no periods table then), none by the schedule
    // since the 1st: that period is owed, not a baseline.
    app.eur_invoices(1_000_000, 1).await;
    app.pay().await;
    app.eur_invoices(0, 2).await;
    let pool = db::pool(&app.config.database_url, 1);
    db::run(&pool, |c| {
        diesel::update(runs::pay_runs)
            .set(
                runs::started_at.eq(chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .expect("date")),
            )
            .execute(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("old run");

    let handle = replica(&app).await;
    wait_until_paid(&app, 3).await;

    assert_eq!(
        scheduled(&pool).await,
        vec![(due_now(), "completed".to_owned())]
    );
    handle.stop(true).await;
}

/// The daily schedule of these tests: 06:00 UTC, as by default.
const DAILY: &str = "0 0 6 * * *";

/// A replica with only the daily schedule on.
async fn daily_replica(app: &TestApp) -> invoice_app::startup::StopHandle {
    let mut config = test_config(&app.db, &app.provider().base_url);
    config.daily_schedule = Some(cron::Schedule::from_str(DAILY).expect("valid"));
    config.dunning_schedule = app.config.dunning_schedule.clone();
    let replica = Application::build(config).await.expect("replica starts");
    let handle = replica.handle();
    tokio::spawn(replica.run_until_stopped());
    handle
}

/// The daily periods recorded, as (period, kind, the run's kind and status).
async fn daily_periods(pool: &db::DbPool) -> Vec<(String, String, Option<(String, String)>)> {
    db::run(pool, |c| {
        periods::billing_periods
            .left_join(runs::pay_runs.on(periods::run_id.eq(runs::id.nullable())))
            .filter(periods::schedule.eq("daily"))
            .order(periods::period)
            .select((
                periods::period,
                periods::kind,
                (runs::kind, runs::status).nullable(),
            ))
            .load(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("periods")
}

/// A past-due invoice is due again, and the daily run was missed (replicas ran days ago,
/// none was up at 06:00): two replicas starting at once catch the latest daily period up
/// once, retrying the due invoice with one charge and leaving a pending invoice to the
/// monthly run.
async fn a_missed_daily_run_is_caught_up_once(backend: Backend) {
    let app = crate::dunning::app_with(backend, "1s", 50).await;
    let declined = app.create_invoice("C001", 120, "EUR").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.pay().await;
    let past_due = crate::dunning::invoice(&app, &declined).await;
    assert_eq!(past_due["status"], "past_due", "{past_due}");
    let pending = app.create_invoice("C001", 10, "EUR").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.provider()
        .deposit("C001", money(100, Currency::Eur))
        .await;
    crate::dunning::until_due(&past_due).await;
    let pool = db::pool(&app.config.database_url, 1);
    db::run(&pool, |c| {
        diesel::insert_into(periods::billing_periods)
            .values((
                periods::period.eq("daily/2000-01-01T06:00:00Z"),
                periods::schedule.eq("daily"),
                periods::kind.eq("baseline"),
                periods::taken_at.eq(Utc::now().naive_utc()),
            ))
            .execute(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("baseline");

    let (first, second) = tokio::join!(daily_replica(&app), daily_replica(&app));
    wait_until_paid(&app, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let latest = cron::Schedule::from_str(DAILY)
        .expect("valid")
        .after(&Utc::now())
        .next_back()
        .expect("a past fire time")
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    assert_eq!(
        daily_periods(&pool).await,
        vec![
            (
                "daily/2000-01-01T06:00:00Z".to_owned(),
                "baseline".to_owned(),
                None
            ),
            (
                format!("daily/{latest}"),
                "run".to_owned(),
                Some(("dunning".to_owned(), "completed".to_owned()))
            ),
        ],
        "the latest missed period is run once, the ones before it are not owed twice"
    );
    let dunning_runs: Vec<(String, i32, i32)> = db::run(&pool, |c| {
        runs::pay_runs
            .filter(runs::kind.eq("dunning"))
            .select((runs::trigger, runs::paid, runs::retry_later))
            .load(c)
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("runs");
    assert_eq!(dunning_runs, vec![("schedule".to_owned(), 1, 0)]);
    // Then the period reconciles, once across both replicas.
    let mut reconciled: Vec<(String, String)> = Vec::new();
    for _ in 0..100 {
        reconciled = db::run(&pool, |c| {
            runs::pay_runs
                .filter(runs::kind.eq("reconcile"))
                .select((runs::trigger, runs::status))
                .load(c)
                .map_err(anyhow::Error::from)
        })
        .await
        .expect("runs");
        if reconciled.iter().all(|(_, status)| status != "running") && !reconciled.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        reconciled,
        vec![("schedule".to_owned(), "completed".to_owned())]
    );
    let ledger = app.provider().ledger().await;
    assert_eq!(ledger.len(), 1, "one charge: {ledger:?}");
    assert_eq!(ledger[0].invoice_id, declined);
    assert_eq!(
        crate::dunning::invoice(&app, &pending).await["status"],
        "pending",
        "a daily run retries; it does not bill"
    );
    first.stop(true).await;
    second.stop(true).await;
}

/// A database whose monthly schedule has run for months still owes the daily schedule
/// nothing at its first start: its first daily period is its baseline.
async fn the_first_daily_period_is_a_baseline_beside_monthly_ones(backend: Backend) {
    let app = crate::dunning::app_with(backend, "1s", 50).await;
    let id = app.create_invoice("C001", 120, "EUR").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.pay().await;
    let past_due = crate::dunning::invoice(&app, &id).await;
    crate::dunning::until_due(&past_due).await;
    let pool = db::pool(&app.config.database_url, 1);
    insert_period(&pool, "2000-01-01T00:00:00Z", "baseline", None).await;

    let replica = daily_replica(&app).await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    let periods = daily_periods(&pool).await;
    assert_eq!(periods.len(), 1, "{periods:?}");
    assert_eq!((periods[0].1.as_str(), &periods[0].2), ("baseline", &None));
    assert_eq!(
        crate::dunning::invoice(&app, &id).await["status"],
        "past_due",
        "not retried by a period that was not owed"
    );
    replica.stop(true).await;
}

both_backends!(
    a_missed_daily_run_is_caught_up_once,
    the_first_daily_period_is_a_baseline_beside_monthly_ones,
    upgraded_database_owes_the_period_its_old_release_did_not_pay,
    period_missed_while_down_is_paid_once_by_the_first_replica_up,
    first_start_owes_no_period,
    period_whose_run_died_is_taken_over,
    attempts_say_whether_the_request_left,
);
