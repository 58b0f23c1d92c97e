//! The declines an account's status gives, with their codes, statuses and classes; what a
//! replay of each answers; and the operator's way to fund, hold, release and close accounts
//! (`payment-provider accounts …`, the real binary on the provider's database).

use api_contract::{DeclineClass, ErrorCode};
use payment_provider::domain::{AccountAction, AccountStatus};
use test_support::both_backends;

use crate::helpers::{
    Backend, TestApp, assert_problem, assert_replayed, charge_body, eur, spawn_app,
};

/// Asserts a decline with `code` and `status`, whose code the contract puts in `class`.
async fn assert_decline(response: reqwest::Response, status: u16, code: &str, class: DeclineClass) {
    let body = assert_problem(response, status, code).await;
    let parsed: ErrorCode = serde_json::from_value(body["code"].clone()).expect("a code");
    assert_eq!(parsed.decline_class(), Some(class), "{code}");
}

async fn status_of(app: &TestApp, customer: &str) -> Option<AccountStatus> {
    let id = customer.to_owned();
    payment_provider::db::run(&app.provider.pool, move |c| {
        payment_provider::db::accounts::find(c, &id).map_err(anyhow::Error::from)
    })
    .await
    .expect("account read")
    .map(|a| a.status)
}

async fn an_account_on_hold_is_declined_try_again_later_and_charged_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(10_000)).await;
    app.provider
        .account_action("C001", AccountAction::Hold)
        .await;
    let body = charge_body("inv-1", "C001", 1215, "EUR");

    let first = app.charge("key-1", &body).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    assert_decline(first, 402, "try_again_later", DeclineClass::Soft).await;
    let replay = app.charge("key-1", &body).await;
    assert_replayed(&replay);
    assert_decline(replay, 402, "try_again_later", DeclineClass::Soft).await;

    assert_eq!(app.provider.balance("C001").await, Some(10_000));
    assert!(app.provider.ledger().await.is_empty());
}

async fn a_closed_account_is_declined_account_closed_and_never_debited(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(10_000)).await;
    // Closed while on hold: closing ends the hold too.
    app.provider
        .account_action("C001", AccountAction::Hold)
        .await;
    app.provider
        .account_action("C001", AccountAction::Close)
        .await;
    let body = charge_body("inv-1", "C001", 1215, "EUR");

    assert_decline(
        app.charge("key-1", &body).await,
        402,
        "account_closed",
        DeclineClass::Hard,
    )
    .await;
    let replay = app.charge("key-1", &body).await;
    assert_replayed(&replay);
    assert_decline(replay, 402, "account_closed", DeclineClass::Hard).await;
    // Nor with any other key, amount or concurrency.
    let app = std::sync::Arc::new(app);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let key = format!("other-{i}");
                let body = charge_body(&key, "C001", 100 + i, "EUR");
                app.charge(&key, &body).await.status().as_u16()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), 402);
    }

    assert_eq!(app.provider.balance("C001").await, Some(10_000));
    assert!(app.provider.ledger().await.is_empty());
}

/// A customer who cannot fix the charge by waiting is never told to try again later.
async fn hard_declines_answer_before_soft_ones(backend: Backend) {
    let app = spawn_app(backend).await;
    // On hold, and in another currency than the charge's.
    app.provider
        .fund(
            "C003",
            api_contract::Money::new(10_000, api_contract::Currency::Dkk).expect("valid"),
        )
        .await;
    app.provider
        .account_action("C003", AccountAction::Hold)
        .await;
    // Closed, and short of the amount.
    app.provider.fund("C001", eur(100)).await;
    app.provider
        .account_action("C001", AccountAction::Close)
        .await;

    assert_decline(
        app.charge("k1", &charge_body("inv-1", "C003", 500, "EUR"))
            .await,
        422,
        "currency_mismatch",
        DeclineClass::Hard,
    )
    .await;
    assert_decline(
        app.charge("k2", &charge_body("inv-2", "C001", 500, "EUR"))
            .await,
        402,
        "account_closed",
        DeclineClass::Hard,
    )
    .await;
    assert!(app.provider.ledger().await.is_empty());
}

/// Funds paid in by the operator pay the invoice's next attempt, under a new key; the old
/// key keeps its answer, as at any PSP: a replay never becomes a second attempt.
async fn funds_paid_in_by_the_operator_pay_a_new_key_and_the_old_one_replays_its_decline(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(100)).await;
    let body = charge_body("inv-1", "C001", 500, "EUR");
    assert_decline(
        app.charge("key-1", &body).await,
        402,
        "insufficient_funds",
        DeclineClass::Soft,
    )
    .await;

    let funded = app.operator(&["fund", "C001", "5.00", "EUR"]).await;
    assert!(funded.success, "{}", funded.stderr);
    assert!(
        funded
            .stdout
            .lines()
            .any(|l| l == "customer C001: 6.00 EUR, active"),
        "{}",
        funded.stdout
    );
    assert_eq!(app.provider.balance("C001").await, Some(600));

    let replay = app.charge("key-1", &body).await;
    assert_replayed(&replay);
    assert_decline(replay, 402, "insufficient_funds", DeclineClass::Soft).await;
    assert!(app.provider.ledger().await.is_empty());

    assert_eq!(app.charge("key-2", &body).await.status().as_u16(), 201);
    assert_eq!(app.provider.balance("C001").await, Some(100));
    let ledger = app.provider.ledger().await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].idempotency_key, "key-2");
    let old = app.charge("key-1", &body).await;
    assert_replayed(&old);
    assert_decline(old, 402, "insufficient_funds", DeclineClass::Soft).await;
}

/// A hold lifted by the operator lets a new key charge; the held key's answer stays.
async fn a_hold_released_by_the_operator_pays_a_new_key_and_the_old_one_replays_its_decline(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(10_000)).await;
    let held = app.operator(&["hold", "C001"]).await;
    assert!(held.success, "{}", held.stderr);
    assert_eq!(status_of(&app, "C001").await, Some(AccountStatus::OnHold));
    let body = charge_body("inv-1", "C001", 500, "EUR");
    assert_decline(
        app.charge("key-1", &body).await,
        402,
        "try_again_later",
        DeclineClass::Soft,
    )
    .await;
    // Money may arrive while an account is held.
    assert!(app.operator(&["fund", "C001", "1", "EUR"]).await.success);
    assert_eq!(app.provider.balance("C001").await, Some(10_100));

    let released = app.operator(&["release", "C001"]).await;
    assert!(released.success, "{}", released.stderr);
    assert!(
        released
            .stdout
            .lines()
            .any(|l| l == "customer C001: 101.00 EUR, active"),
        "{}",
        released.stdout
    );
    let replay = app.charge("key-1", &body).await;
    assert_replayed(&replay);
    assert_decline(replay, 402, "try_again_later", DeclineClass::Soft).await;
    assert!(app.provider.ledger().await.is_empty());

    assert_eq!(app.charge("key-2", &body).await.status().as_u16(), 201);
    assert_eq!(app.provider.balance("C001").await, Some(10_100 - 500));
    assert_eq!(app.provider.ledger().await.len(), 1);
}

/// Closing is for good: no funds go in, no hold or release reopens it, and the operator is
/// told why. Refused commands exit non-zero and change nothing.
async fn the_operator_cannot_fund_or_reopen_a_closed_account(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(1000)).await;
    let closed = app.operator(&["close", "C001"]).await;
    assert!(closed.success, "{}", closed.stderr);
    // Repeating a command whose answer was lost is no error.
    assert!(app.operator(&["close", "C001"]).await.success);

    let funded = app.operator(&["fund", "C001", "5.00", "EUR"]).await;
    assert!(!funded.success, "{}", funded.stdout);
    assert!(funded.stderr.contains("is closed"), "{}", funded.stderr);
    for action in ["release", "hold"] {
        let reopened = app.operator(&[action, "C001"]).await;
        assert!(!reopened.success, "{action}: {}", reopened.stdout);
        assert!(
            reopened.stderr.contains("stays closed"),
            "{}",
            reopened.stderr
        );
    }
    assert_eq!(status_of(&app, "C001").await, Some(AccountStatus::Closed));
    assert_eq!(app.provider.balance("C001").await, Some(1000));
    let shown = app.operator(&["show", "C001"]).await;
    assert!(
        shown
            .stdout
            .lines()
            .any(|l| l == "customer C001: 10.00 EUR, closed"),
        "{}",
        shown.stdout
    );
    assert_decline(
        app.charge("key-1", &charge_body("inv-1", "C001", 100, "EUR"))
            .await,
        402,
        "account_closed",
        DeclineClass::Hard,
    )
    .await;
}

/// What the operator gets wrong is refused, naming why, and changes nothing.
async fn the_operator_is_refused_a_wrong_currency_amount_or_customer(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(1000)).await;
    for (args, why) in [
        (&["fund", "C001", "5.00", "DKK"][..], "kept in EUR, not DKK"),
        (&["fund", "C001", "5.001", "EUR"], "amount \"5.001\""),
        (&["fund", "C001", "0", "EUR"], "above zero"),
        (&["fund", "C001", "-5", "EUR"], "amount \"-5\""),
        (
            &["fund", "NOBODY", "5.00", "EUR"],
            "no account for customer NOBODY",
        ),
        (&["hold", "NOBODY"], "no account for customer NOBODY"),
    ] {
        let run = app.operator(args).await;
        assert!(!run.success, "{args:?}: {}", run.stdout);
        assert!(run.stderr.contains(why), "{args:?}: {}", run.stderr);
    }
    assert_eq!(app.provider.balance("C001").await, Some(1000));
    assert_eq!(status_of(&app, "C001").await, Some(AccountStatus::Active));
}

/// The operator's actions have no route: not on the API port with the caller's token, not
/// on the metrics port.
async fn operator_actions_are_not_served_over_http(backend: Backend) {
    let app = spawn_app(backend).await;
    app.provider.fund("C001", eur(1000)).await;
    for path in [
        "/v1/accounts/C001/fund",
        "/v1/accounts/C001/close",
        "/v1/accounts/C001/hold",
    ] {
        let response = app
            .client
            .post(app.url(path))
            .bearer_auth(&app.provider.token)
            .json(&serde_json::json!({"amount": {"minor_units": 500, "currency": "EUR"}}))
            .send()
            .await
            .expect("sent");
        assert_problem(response, 404, "not_found").await;
        let metrics_port = app.provider.metrics_url.trim_end_matches("/metrics");
        let response = app
            .client
            .post(format!("{metrics_port}{path}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(
            response.status().as_u16(),
            404,
            "{path} on the metrics port"
        );
    }
    let changed = app
        .client
        .post(app.url("/v1/accounts/C001"))
        .bearer_auth(&app.provider.token)
        .json(&serde_json::json!({"status": "closed"}))
        .send()
        .await
        .expect("sent");
    assert_problem(changed, 405, "method_not_allowed").await;
    assert_eq!(app.provider.balance("C001").await, Some(1000));
    assert_eq!(status_of(&app, "C001").await, Some(AccountStatus::Active));
}

/// Accounts created before accounts had a status come out of the migration active, and
/// are charged as before. The migration is reverted (its down.sql) and applied again.
async fn accounts_from_before_the_status_migration_are_active(backend: Backend) {
    use diesel::RunQueryDsl;
    use payment_provider::db::{self, AnyConnection};
    let app = spawn_app(backend).await;
    db::run(&app.provider.pool, |c| {
        match c {
            AnyConnection::Postgresql(pg) => revert_to_before_account_status(pg),
            AnyConnection::Sqlite(sqlite) => revert_to_before_account_status(sqlite),
        }
        diesel::sql_query(
            "INSERT INTO accounts (customer_id, currency, balance_minor, updated_at) \
             VALUES ('C001', 'EUR', 10000, CURRENT_TIMESTAMP)",
        )
        .execute(c)?;
        db::migrate(c)
    })
    .await
    .expect("migrated again");

    assert_eq!(status_of(&app, "C001").await, Some(AccountStatus::Active));
    let charged = app
        .charge("key-1", &charge_body("inv-1", "C001", 1215, "EUR"))
        .await;
    assert_eq!(charged.status().as_u16(), 201);
    assert_eq!(app.provider.balance("C001").await, Some(10_000 - 1215));
}

/// Reverts migrations, newest first, down to and including the one that added the status.
fn revert_to_before_account_status<C, DB>(conn: &mut C)
where
    DB: diesel::backend::Backend,
    C: diesel_migrations::MigrationHarness<DB>,
    diesel_migrations::FileBasedMigrations: diesel::migration::MigrationSource<DB>,
{
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let source = diesel_migrations::FileBasedMigrations::from_path(dir).expect("migrations");
    for _ in 0..16 {
        let reverted = conn
            .revert_last_migration(source.clone())
            .expect("reverted");
        if reverted.to_string() == "20261201000001" {
            return;
        }
    }
    panic!("the account status migration was never reverted");
}

both_backends!(
    an_account_on_hold_is_declined_try_again_later_and_charged_nothing,
    a_closed_account_is_declined_account_closed_and_never_debited,
    hard_declines_answer_before_soft_ones,
    funds_paid_in_by_the_operator_pay_a_new_key_and_the_old_one_replays_its_decline,
    a_hold_released_by_the_operator_pays_a_new_key_and_the_old_one_replays_its_decline,
    the_operator_cannot_fund_or_reopen_a_closed_account,
    the_operator_is_refused_a_wrong_currency_amount_or_customer,
    operator_actions_are_not_served_over_http,
    accounts_from_before_the_status_migration_are_active,
);
