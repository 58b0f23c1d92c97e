//! Dunning against the real provider: a soft decline makes an invoice past due and it is
//! tried again on the schedule (paid once funds arrive, uncollectible once the schedule is
//! spent); a hard decline fails it at once. Each test reads the provider's ledger and the
//! audit trail, not only the API's answers.

use std::time::Duration;

use api_contract::Currency;
use chrono::{DateTime, Utc};
use invoice_app::domain::DunningSchedule;
use payment_provider::domain::AccountAction;
use serde_json::Value;

use crate::helpers::{Backend, TestApp, money, spawn_app_with};
use crate::records::attempts_per_invoice;
use test_support::both_backends;

const RETRY_DUE: &str = "invoice_app_invoices_retry_due";
const OLDEST_RETRY_DUE: &str = "invoice_app_oldest_retry_due_seconds";
const DUNNING_PAST_DUE: &str = "invoice_app_dunning_invoices{status=\"past_due\"}";
const DUNNING_UNCOLLECTIBLE: &str = "invoice_app_dunning_invoices{status=\"uncollectible\"}";

/// An app whose dunning schedule is `schedule`, with C001 holding `balance` EUR cents.
pub(crate) async fn app_with(backend: Backend, schedule: &str, balance: i64) -> TestApp {
    let schedule = DunningSchedule::parse(schedule).expect("a valid schedule");
    let app = spawn_app_with(
        backend,
        |_| {},
        |a| {
            a.dunning_schedule = schedule;
            // A provider that is away hands a retry back within a second.
            a.retry_max_elapsed = Duration::from_secs(1);
        },
    )
    .await;
    app.provider()
        .fund("C001", money(balance, Currency::Eur))
        .await;
    app
}

/// A new invoice of 1.20 EUR for `customer`; its id.
async fn new_invoice(app: &TestApp, customer: &str) -> String {
    let created = app.create_invoice(customer, 120, "EUR").await;
    created["id"].as_str().expect("id").to_owned()
}

pub(crate) async fn invoice(app: &TestApp, id: &str) -> Value {
    let (status, invoice) = app.get_json(&format!("/invoices/{id}")).await;
    assert_eq!(status, 200, "{invoice}");
    invoice
}

fn next_attempt(invoice: &Value) -> DateTime<Utc> {
    invoice["next_attempt_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("a next attempt: {invoice}"))
        .with_timezone(&Utc)
}

/// Waits until `invoice`'s next attempt is due.
pub(crate) async fn until_due(invoice: &Value) {
    let wait = (next_attempt(invoice) - Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
}

/// Declined for insufficient funds, past due; a run before it is due leaves it alone; funds
/// arrive and the retry pays it, with one charge in the ledger.
async fn a_soft_decline_is_past_due_and_paid_once_funds_arrive(backend: Backend) {
    let app = app_with(backend, "2s,4s", 50).await;
    let id = new_invoice(&app, "C001").await;

    let report = app.pay().await;
    assert_eq!(report["summary"]["paid"], 0, "{report}");
    assert_eq!(report["summary"]["retry_later"], 1, "{report}");
    let past_due = invoice(&app, &id).await;
    assert_eq!(past_due["status"], "past_due", "{past_due}");
    assert_eq!(past_due["attempt_count"], 1);
    assert_eq!(past_due["failure_reason"], "insufficient_funds");
    let first = next_attempt(&past_due);
    let in_two = Utc::now() + chrono::TimeDelta::seconds(2);
    assert!(
        (first - in_two).num_milliseconds().abs() < 1500,
        "the first retry comes 2s after the decline: {first} vs {in_two}"
    );
    assert_eq!(app.invoices("past_due").await.len(), 1);
    assert_eq!(app.metric(DUNNING_PAST_DUE).await, Some(1.0));
    assert_eq!(app.metric(RETRY_DUE).await, Some(0.0));

    // Not due yet: the next run does not call it.
    let early = app.pay().await;
    assert_eq!(
        early["summary"],
        serde_json::json!({"paid": 0, "failed": 0, "retry_later": 0})
    );
    assert_eq!(attempts_per_invoice(&app).await[&id], 1);

    app.provider()
        .deposit("C001", money(100, Currency::Eur))
        .await;
    until_due(&past_due).await;
    // Due and not yet retried: the gauges the overdue-retry alert reads.
    assert_eq!(app.metric(RETRY_DUE).await, Some(1.0));
    let waited = app.metric(OLDEST_RETRY_DUE).await.expect("exported");
    assert!((0.0..5.0).contains(&waited) && waited > 0.0, "{waited}");
    let retry = app.pay().await;
    assert_eq!(retry["summary"]["paid"], 1, "{retry}");
    assert_eq!(app.metric(RETRY_DUE).await, Some(0.0));
    assert_eq!(app.metric(OLDEST_RETRY_DUE).await, Some(0.0));
    assert_eq!(app.metric(DUNNING_PAST_DUE).await, Some(0.0));
    assert_eq!(
        app.metric("invoice_app_dunning_invoices{status=\"paid\"}")
            .await,
        Some(1.0),
        "recovered by dunning"
    );
    let paid = invoice(&app, &id).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["next_attempt_at"], Value::Null);
    assert_eq!(paid["failure_reason"], Value::Null);
    assert_eq!(paid["attempt_count"], 1, "the declines stay counted");
    let ledger = app.provider().ledger().await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].invoice_id, id);
    assert_eq!(paid["charge_id"], ledger[0].id.as_str());
    assert_eq!(app.provider().balance("C001").await, Some(50 + 100 - 120));
    assert_eq!(attempts_per_invoice(&app).await[&id], 2);
    // Paid for good: no run calls it again.
    app.pay().await;
    assert_eq!(attempts_per_invoice(&app).await[&id], 2);
}

/// Declined on the first attempt and on every retry of the schedule: uncollectible with the
/// last reason, never charged, never called again.
async fn an_exhausted_schedule_makes_the_invoice_uncollectible(backend: Backend) {
    let app = app_with(backend, "1s,2s", 10).await;
    let id = new_invoice(&app, "C001").await;
    let report = app.pay().await;
    assert_eq!(report["summary"]["retry_later"], 1, "{report}");
    let first = invoice(&app, &id).await;
    let since = next_attempt(&first) - chrono::TimeDelta::seconds(1);
    until_due(&first).await;

    let report = app.pay().await;
    assert_eq!(report["summary"]["retry_later"], 1, "{report}");
    let second = invoice(&app, &id).await;
    assert_eq!(second["status"], "past_due", "{second}");
    assert_eq!(second["attempt_count"], 2);
    // Counted from the first decline, not from the retry.
    let from_first = next_attempt(&second) - since;
    assert!(
        (from_first.num_milliseconds() - 2000).abs() < 50,
        "the second retry is 2s after the first decline: {from_first}"
    );
    // A hold is a soft decline too: the last retry ends it with that reason.
    app.provider()
        .account_action("C001", AccountAction::Hold)
        .await;
    until_due(&second).await;

    let report = app.pay().await;
    assert_eq!(report["summary"]["failed"], 1, "{report}");
    let given_up = invoice(&app, &id).await;
    assert_eq!(given_up["status"], "uncollectible", "{given_up}");
    assert_eq!(given_up["attempt_count"], 3);
    assert_eq!(given_up["failure_reason"], "try_again_later");
    assert_eq!(given_up["next_attempt_at"], Value::Null);
    assert_eq!(app.invoices("uncollectible").await.len(), 1);
    assert_eq!(app.metric(DUNNING_UNCOLLECTIBLE).await, Some(1.0));
    assert_eq!(
        app.metric("invoice_app_invoices{status=\"uncollectible\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(app.metric(RETRY_DUE).await, Some(0.0));

    app.provider()
        .account_action("C001", AccountAction::Release)
        .await;
    app.pay().await;
    assert_eq!(attempts_per_invoice(&app).await[&id], 3);
    assert!(app.provider().ledger().await.is_empty());
    assert_eq!(app.provider().balance("C001").await, Some(10));
}

/// A closed account is a hard decline: failed at the first attempt, and during dunning
/// too, never retried.
async fn a_hard_decline_fails_at_once(backend: Backend) {
    let app = app_with(backend, "1s,2s", 10).await;
    app.provider().fund("C002", money(10, Currency::Eur)).await;
    let at_once = new_invoice(&app, "C002").await;
    let in_dunning = new_invoice(&app, "C001").await;
    app.provider()
        .account_action("C002", AccountAction::Close)
        .await;

    let report = app.pay().await;
    assert_eq!(report["summary"]["failed"], 1, "{report}");
    assert_eq!(report["summary"]["retry_later"], 1, "{report}");
    let failed = invoice(&app, &at_once).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["failure_reason"], "account_closed");
    assert_eq!(failed["attempt_count"], 0);

    let past_due = invoice(&app, &in_dunning).await;
    app.provider()
        .account_action("C001", AccountAction::Close)
        .await;
    until_due(&past_due).await;
    let report = app.pay().await;
    assert_eq!(report["summary"]["failed"], 1, "{report}");
    let failed = invoice(&app, &in_dunning).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["failure_reason"], "account_closed");
    assert_eq!(failed["next_attempt_at"], Value::Null);
    assert_eq!(failed["attempt_count"], 1);

    app.pay().await;
    let attempts = attempts_per_invoice(&app).await;
    assert_eq!((attempts[&at_once], attempts[&in_dunning]), (1, 2));
    assert!(app.provider().ledger().await.is_empty());
}

/// Transient errors are the retry budget's, not the schedule's: a past-due retry that
/// cannot reach the provider goes back to past due, uncounted and still due, and the next
/// run pays it.
async fn a_retry_the_provider_missed_stays_past_due(backend: Backend) {
    let mut app = app_with(backend, "1s,2s", 10).await;
    let id = new_invoice(&app, "C001").await;
    app.pay().await;
    let past_due = invoice(&app, &id).await;
    app.provider()
        .deposit("C001", money(200, Currency::Eur))
        .await;
    until_due(&past_due).await;

    app.provider().kill().await;
    let report = app.pay().await;
    assert_eq!(report["summary"]["retry_later"], 1, "{report}");
    let handed_back = invoice(&app, &id).await;
    assert_eq!(handed_back["status"], "past_due", "{handed_back}");
    assert_eq!(
        handed_back["attempt_count"], 1,
        "a refused connection is no decline"
    );
    assert_eq!(handed_back["next_attempt_at"], past_due["next_attempt_at"]);
    assert_eq!(handed_back["failure_reason"], "insufficient_funds");

    app.provider_mut().restart().await;
    let report = app.pay().await;
    assert_eq!(report["summary"]["paid"], 1, "{report}");
    assert_eq!(invoice(&app, &id).await["status"], "paid");
    assert_eq!(app.provider().ledger().await.len(), 1);
}

both_backends!(
    a_soft_decline_is_past_due_and_paid_once_funds_arrive,
    an_exhausted_schedule_makes_the_invoice_uncollectible,
    a_hard_decline_fails_at_once,
    a_retry_the_provider_missed_stays_past_due,
);
