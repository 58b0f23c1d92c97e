//! Consumer side of the charge contract (DESIGN.md, "The charge call"): invoice-app's real
//! `PaymentClient` against Pact's mock server, one interaction per behaviour of
//! `POST /v1/charges`, each checked down to the `CallOutcome` the client makes of it.
//!
//! A passing run rewrites `pacts/invoice-app-payment-provider.json` (V4) from scratch: the
//! file is committed, and payment-provider's `pact_provider` test verifies it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use api_contract::{
    CHARGES_PATH, ChargeRequest, ChargeStatus, Currency, CustomerId, DeclineClass, ErrorCode,
    IDEMPOTENCY_KEY_PARAM, InvoiceId, Money, PROBLEM_JSON, headers,
};
use invoice_app::domain::{CallOutcome, LookupOutcome, idempotency_key_for};
use invoice_app::payment_client::PaymentClient;
use pact_consumer::builders::InteractionBuilder;
use pact_consumer::patterns::{JsonPattern, Pattern};
use pact_consumer::prelude::*;
use pact_models::matchingrules::{MatchingRule, MatchingRuleCategory, RuleLogic};
use pact_models::path_exp::DocPath;
use secrecy::SecretString;
use serde_json::{Value, json};

const CONSUMER: &str = "invoice-app";
const PROVIDER: &str = "payment-provider";
const PACT_FILE: &str = "invoice-app-payment-provider.json";

/// The client's token in these tests. The provider never sees it: the pact has the provider
/// state supply a token it accepts (`Bearer ${token}`), so nothing here depends on the
/// provider's test set-up.
const ANY_TOKEN: &str = "token-of-the-consumer-tests";
/// A token no provider issued; the provider is sent exactly this one.
const BAD_TOKEN: &str = "not-a-valid-token";

/// Idempotency-Key: 1 to 255 visible ASCII characters.
const KEY_SHAPE: &str = r"^[!-~]{1,255}$";
const CURRENCY_SHAPE: &str = r"^[A-Z]{3}$";
const CHARGE_ID_SHAPE: &str = r"^ch_[0-9a-f]{32}$";
const RFC3339_SHAPE: &str = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$";

#[tokio::test]
async fn pact_charge_contract() {
    // Interactions are merged into one file as each mock server closes; starting from an
    // empty directory keeps stale or edited interactions from surviving the merge.
    let scratch = Scratch::new();
    let out = scratch.0.as_path();
    new_charge(out).await;
    replayed_charge(out).await;
    insufficient_funds(out).await;
    unknown_customer(out).await;
    currency_mismatch(out).await;
    zero_amount(out).await;
    bad_token(out).await;
    provider_unavailable(out).await;
    key_in_flight(out).await;
    key_reused(out).await;
    rate_limited(out).await;
    database_unavailable(out).await;
    account_on_hold(out).await;
    account_closed(out).await;
    lookup_charged(out).await;
    lookup_declined(out).await;
    lookup_never_used(out).await;
    lookup_in_flight(out).await;
    publish(out);
}

async fn new_charge(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000001", "C001", 1215);
    let server = pact(out)
        .interaction("a new charge", "", |mut i| {
            account_state(&mut i, "C001", 1_000_000, Currency::Eur);
            authorised_request(&mut i, &charge, integer(charge.minor_units));
            i.response
                .status(201)
                .content_type("application/json")
                .json_body(charge_body(&charge));
            i
        })
        .start_mock_server(None, None);

    let (outcome, status) = charge.send(server, ANY_TOKEN).await;
    assert_eq!(status, Some(201));
    let CallOutcome::Succeeded {
        charge: made,
        replayed: false,
    } = outcome
    else {
        panic!("a new charge: expected a first-time success, got {outcome:?}");
    };
    assert!(made.id.starts_with("ch_"), "charge id {}", made.id);
    assert_eq!(made.status, ChargeStatus::Succeeded);
    assert_eq!(made.amount, charge.request().amount);
}

async fn replayed_charge(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000002", "C001", 1215);
    let server = pact(out)
        .interaction("a retry of a charge that already succeeded", "", |mut i| {
            // The provider makes this very charge once, so that ours is a replay.
            i.given_with_params(
                format!("a charge with key {} already succeeded", charge.key()),
                &charge.params(charge.minor_units),
            );
            authorised_request(&mut i, &charge, integer(charge.minor_units));
            i.response
                .status(200)
                .content_type("application/json")
                .header(headers::IDEMPOTENT_REPLAYED, "true")
                .json_body(charge_body(&charge));
            i
        })
        .start_mock_server(None, None);

    let (outcome, status) = charge.send(server, ANY_TOKEN).await;
    assert_eq!(status, Some(200));
    assert!(
        matches!(outcome, CallOutcome::Succeeded { replayed: true, .. }),
        "a replay: expected a replayed success, got {outcome:?}"
    );
}

async fn insufficient_funds(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000003", "C001", 1215);
    let server = pact(out)
        .interaction("a charge that the balance cannot cover", "", |mut i| {
            account_state(&mut i, "C001", 500, Currency::Eur);
            authorised_request(&mut i, &charge, integer(charge.minor_units));
            problem(
                &mut i,
                402,
                ErrorCode::InsufficientFunds,
                "Insufficient funds",
                "the account of customer C001 cannot cover the charge",
            );
            i
        })
        .start_mock_server(None, None);

    let (outcome, _) = charge.send(server, ANY_TOKEN).await;
    assert_declined(outcome, ErrorCode::InsufficientFunds, DeclineClass::Soft);
}

async fn unknown_customer(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000004", "C999", 1215);
    let server = pact(out)
        .interaction("a charge for an unknown customer", "", |mut i| {
            i.given_with_params(
                "customer C999 has no account",
                &json!({"customer_id": "C999"}),
            );
            authorised_request(&mut i, &charge, integer(charge.minor_units));
            problem(
                &mut i,
                404,
                ErrorCode::CustomerNotFound,
                "Customer not found",
                "no account for customer C999",
            );
            i
        })
        .start_mock_server(None, None);

    let (outcome, _) = charge.send(server, ANY_TOKEN).await;
    assert_declined(outcome, ErrorCode::CustomerNotFound, DeclineClass::Hard);
}

async fn currency_mismatch(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000005", "C003", 1215);
    let server = pact(out)
        .interaction(
            "a charge in another currency than the account's",
            "",
            |mut i| {
                account_state(&mut i, "C003", 1_000_000, Currency::Dkk);
                authorised_request(&mut i, &charge, integer(charge.minor_units));
                problem(
                    &mut i,
                    422,
                    ErrorCode::CurrencyMismatch,
                    "Currency mismatch",
                    "the account is kept in DKK, the charge is in EUR",
                );
                i
            },
        )
        .start_mock_server(None, None);

    let (outcome, _) = charge.send(server, ANY_TOKEN).await;
    assert_declined(outcome, ErrorCode::CurrencyMismatch, DeclineClass::Hard);
}

async fn zero_amount(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000006", "C001", 0);
    let server = pact(out)
        .interaction("a charge of nothing", "", |mut i| {
            account_state(&mut i, "C001", 1_000_000, Currency::Eur);
            // Exactly zero: any other amount is a different behaviour.
            authorised_request(&mut i, &charge, 0.into());
            problem(
                &mut i,
                422,
                ErrorCode::InvalidRequest,
                "Invalid request",
                "amount.minor_units must be greater than zero",
            );
            i
        })
        .start_mock_server(None, None);

    let (outcome, _) = charge.send(server, ANY_TOKEN).await;
    assert_declined(outcome, ErrorCode::InvalidRequest, DeclineClass::Hard);
}

async fn bad_token(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000007", "C001", 1215);
    let server = pact(out)
        .interaction(
            "a charge with a token the provider did not issue",
            "",
            |mut i| {
                i.given(format!("the token {BAD_TOKEN} was never issued"));
                // Sent as it is: no provider state swaps this one for a good token.
                i.request
                    .header("Authorization", format!("Bearer {BAD_TOKEN}"));
                charge_request(&mut i, &charge, integer(charge.minor_units));
                problem(
                    &mut i,
                    401,
                    ErrorCode::Unauthorized,
                    "Unauthorized",
                    "send a valid bearer token",
                );
                i
            },
        )
        .start_mock_server(None, None);

    let (outcome, status) = charge.send(server, BAD_TOKEN).await;
    assert_eq!(status, Some(401));
    // Our own request was refused: nothing about the invoice, so no decline.
    assert!(
        matches!(&outcome, CallOutcome::Attention { reason } if reason.contains("401")),
        "a bad token: expected a rejection, got {outcome:?}"
    );
}

async fn provider_unavailable(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000008", "C001", 1215);
    let server = pact(out)
        .interaction("a charge while the provider is unavailable", "", |mut i| {
            i.given("the provider is unavailable");
            authorised_request(&mut i, &charge, integer(charge.minor_units));
            i.response.header("Retry-After", term!(r"^[0-9]+$", "1"));
            problem(
                &mut i,
                503,
                ErrorCode::ServiceUnavailable,
                "Service unavailable",
                "injected fault: try again",
            );
            i
        })
        .start_mock_server(None, None);

    let (outcome, _) = charge.send(server, ANY_TOKEN).await;
    assert!(
        matches!(
            outcome,
            CallOutcome::Retryable {
                retry_after: Some(d),
                ..
            } if d == Duration::from_secs(1)
        ),
        "an outage: expected a retry after 1s, got {outcome:?}"
    );
}

async fn key_in_flight(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000009", "C001", 1215);
    let server = pact(out)
        .interaction(
            "a retry while the first request with its key is still processed",
            "",
            |mut i| {
                // Another request holds the key; the account could pay, so a provider
                // that ignored the claim would charge.
                i.given_with_params(
                    format!("a request with key {} is in flight", charge.key()),
                    &charge.params(charge.minor_units),
                );
                authorised_request(&mut i, &charge, integer(charge.minor_units));
                problem(
                    &mut i,
                    409,
                    ErrorCode::IdempotencyKeyInFlight,
                    "Request in flight",
                    "a request with this key is still being processed; retry later",
                );
                i
            },
        )
        .start_mock_server(None, None);

    let (outcome, _) = charge.send(server, ANY_TOKEN).await;
    assert!(
        matches!(
            &outcome,
            CallOutcome::Retryable { reason, retry_after: None } if reason.contains("409")
        ),
        "a key in flight: expected a retry with backoff, got {outcome:?}"
    );
}

async fn key_reused(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000010", "C001", 1215);
    let server = pact(out)
        .interaction(
            "a charge whose key was used for a charge of another amount",
            "",
            |mut i| {
                // The earlier charge, made under the same key: 9.99 EUR, not 12.15.
                i.given_with_params(
                    format!(
                        "key {} was used for a charge of another amount",
                        charge.key()
                    ),
                    &charge.params(999),
                );
                authorised_request(&mut i, &charge, integer(charge.minor_units));
                problem(
                    &mut i,
                    422,
                    ErrorCode::IdempotencyKeyReused,
                    "Idempotency-Key reused",
                    "this key was used with a different request body",
                );
                i
            },
        )
        .start_mock_server(None, None);

    let (outcome, _) = charge.send(server, ANY_TOKEN).await;
    // Money may have moved under this key: a person looks, the invoice is not declined.
    assert!(
        matches!(
            &outcome,
            CallOutcome::Attention { reason } if reason.contains("idempotency_key_reused")
        ),
        "a reused key: expected it to need attention, got {outcome:?}"
    );
}

async fn rate_limited(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000011", "C001", 1215);
    let server = pact(out)
        .interaction(
            "a charge while the provider limits its rate",
            "",
            |mut i| {
                i.given("the provider is rate limiting invoice-app");
                authorised_request(&mut i, &charge, integer(charge.minor_units));
                i.response.header("Retry-After", term!(r"^[0-9]+$", "2"));
                problem(
                    &mut i,
                    429,
                    ErrorCode::RateLimited,
                    "Too many requests",
                    "slow down: retry after the time Retry-After gives",
                );
                i
            },
        )
        .start_mock_server(None, None);

    let (outcome, _) = charge.send(server, ANY_TOKEN).await;
    assert!(
        matches!(
            outcome,
            CallOutcome::Retryable {
                retry_after: Some(d),
                ..
            } if d == Duration::from_secs(2)
        ),
        "a rate limit: expected a retry after 2s, got {outcome:?}"
    );
}

async fn database_unavailable(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000012", "C001", 1215);
    let server = pact(out)
        .interaction(
            "a charge while the provider's database is unavailable",
            "",
            |mut i| {
                i.given("the database is unavailable");
                authorised_request(&mut i, &charge, integer(charge.minor_units));
                // Status and Retry-After only, no body: invoice-app must not need a problem
                // document to retry a 5xx (a proxy in between sends none).
                i.response
                    .status(503)
                    .header("Retry-After", term!(r"^[0-9]+$", "1"));
                i
            },
        )
        .start_mock_server(None, None);

    let (outcome, status) = charge.send(server, ANY_TOKEN).await;
    assert_eq!(status, Some(503));
    assert!(
        matches!(
            outcome,
            CallOutcome::Retryable {
                retry_after: Some(d),
                ..
            } if d == Duration::from_secs(1)
        ),
        "a bare 503: expected a retry after 1s, got {outcome:?}"
    );
}

async fn account_on_hold(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000013", "C004", 1215);
    let server = pact(out)
        .interaction("a charge while the account is on hold", "", |mut i| {
            // The account could pay: only the hold stands between the charge and the money.
            held_account_state(&mut i, &charge, "on hold");
            authorised_request(&mut i, &charge, integer(charge.minor_units));
            problem(
                &mut i,
                402,
                ErrorCode::TryAgainLater,
                "Try again later",
                "the account of customer C004 cannot be charged for now; try again later",
            );
            i
        })
        .start_mock_server(None, None);

    let (outcome, _) = charge.send(server, ANY_TOKEN).await;
    assert_declined(outcome, ErrorCode::TryAgainLater, DeclineClass::Soft);
}

async fn account_closed(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000014", "C005", 1215);
    let server = pact(out)
        .interaction("a charge to a closed account", "", |mut i| {
            // Closed with money on it: a provider that looked at the balance alone would charge.
            held_account_state(&mut i, &charge, "closed");
            authorised_request(&mut i, &charge, integer(charge.minor_units));
            problem(
                &mut i,
                402,
                ErrorCode::AccountClosed,
                "Account closed",
                "the account of customer C005 is closed",
            );
            i
        })
        .start_mock_server(None, None);

    let (outcome, _) = charge.send(server, ANY_TOKEN).await;
    assert_declined(outcome, ErrorCode::AccountClosed, DeclineClass::Hard);
}

/// "the account of customer C004 is on hold": opened with enough for the charge, then
/// given `status` by the provider's operator action.
/// Reconciliation's read: a key whose charge succeeded reads as the charge's replay.
async fn lookup_charged(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000015", "C001", 1215);
    let server = pact(out)
        .interaction("a lookup of a key whose charge succeeded", "", |mut i| {
            i.given_with_params(
                format!("a charge with key {} already succeeded", charge.key()),
                &charge.params(charge.minor_units),
            );
            lookup_request(&mut i, &charge);
            i.response
                .status(200)
                .content_type("application/json")
                .header(headers::IDEMPOTENT_REPLAYED, "true")
                .json_body(charge_body(&charge));
            i
        })
        .start_mock_server(None, None);

    let (outcome, status) = charge.look_up(server).await;
    assert_eq!(status, Some(200));
    let LookupOutcome::Answer(CallOutcome::Succeeded { charge: found, .. }) = outcome else {
        panic!("a charged key: expected the charge, got {outcome:?}");
    };
    assert_eq!(found.invoice_id.as_str(), charge.invoice_id);
    assert_eq!(found.amount, charge.request().amount);
}

/// A key whose charge was declined reads as the stored decline, never as "not found"
/// (which would have the invoice charged again under that key, and replayed the decline).
async fn lookup_declined(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000016", "C001", 1215);
    let server = pact(out)
        .interaction(
            "a lookup of a key whose charge was declined",
            "",
            |mut i| {
                i.given_with_params(
                    format!(
                        "a charge with key {} was declined for insufficient funds",
                        charge.key()
                    ),
                    &charge.params(charge.minor_units),
                );
                lookup_request(&mut i, &charge);
                i.response.header(headers::IDEMPOTENT_REPLAYED, "true");
                problem(
                    &mut i,
                    402,
                    ErrorCode::InsufficientFunds,
                    "Insufficient funds",
                    "the account of customer C001 cannot cover the charge",
                );
                i
            },
        )
        .start_mock_server(None, None);

    let (outcome, _) = charge.look_up(server).await;
    let LookupOutcome::Answer(outcome) = outcome else {
        panic!("a declined key: expected the decline, got {outcome:?}");
    };
    assert_declined(outcome, ErrorCode::InsufficientFunds, DeclineClass::Soft);
}

/// A key invoice-app never used is not found, even when another caller charged under the
/// very same key: keys belong to their caller.
async fn lookup_never_used(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000017", "C001", 1215);
    let server = pact(out)
        .interaction(
            "a lookup of a key that only another caller used",
            "",
            |mut i| {
                i.given_with_params(
                    format!("key {} was used by another caller only", charge.key()),
                    &charge.params(charge.minor_units),
                );
                lookup_request(&mut i, &charge);
                problem(
                    &mut i,
                    404,
                    ErrorCode::KeyNotFound,
                    "Idempotency key not found",
                    "no charge was requested with this idempotency key",
                );
                i
            },
        )
        .start_mock_server(None, None);

    let (outcome, status) = charge.look_up(server).await;
    assert_eq!(status, Some(404));
    assert_eq!(outcome, LookupOutcome::NotFound);
}

/// A key still in flight has no answer yet: looked up again later.
async fn lookup_in_flight(out: &Path) {
    let charge = Example::new("0195b4c0-7a10-7000-8000-000000000018", "C001", 1215);
    let server = pact(out)
        .interaction(
            "a lookup of a key whose request is in flight",
            "",
            |mut i| {
                i.given_with_params(
                    format!("a request with key {} is in flight", charge.key()),
                    &charge.params(charge.minor_units),
                );
                lookup_request(&mut i, &charge);
                problem(
                    &mut i,
                    409,
                    ErrorCode::IdempotencyKeyInFlight,
                    "Request in flight",
                    "a request with this key is still being processed; retry later",
                );
                i
            },
        )
        .start_mock_server(None, None);

    let (outcome, _) = charge.look_up(server).await;
    assert!(
        matches!(
            &outcome,
            LookupOutcome::Answer(CallOutcome::Retryable { reason, .. }) if reason.contains("409")
        ),
        "a key in flight: expected no answer yet, got {outcome:?}"
    );
}

/// `GET /v1/charges?idempotency_key=<key>` with a token the provider accepts.
fn lookup_request(i: &mut InteractionBuilder, charge: &Example) {
    i.request.header_from_provider_state(
        "Authorization",
        "Bearer ${token}",
        term!(r"^Bearer .+$", format!("Bearer {ANY_TOKEN}")),
    );
    i.request
        .get()
        .path(CHARGES_PATH)
        .query_param(IDEMPOTENCY_KEY_PARAM, term!(KEY_SHAPE, charge.key()));
}

fn held_account_state(i: &mut InteractionBuilder, charge: &Example, status: &str) {
    i.given_with_params(
        format!("the account of customer {} is {status}", charge.customer_id),
        &json!({
            "customer_id": charge.customer_id,
            "minor_units": 1_000_000,
            "currency": "EUR",
        }),
    );
}

/// One example charge of the pact, in EUR.
struct Example {
    invoice_id: &'static str,
    customer_id: &'static str,
    minor_units: i64,
}

impl Example {
    fn new(invoice_id: &'static str, customer_id: &'static str, minor_units: i64) -> Self {
        Example {
            invoice_id,
            customer_id,
            minor_units,
        }
    }

    /// The key invoice-app itself derives for the invoice.
    fn key(&self) -> String {
        idempotency_key_for(self.invoice_id, 0)
            .expect("valid key")
            .as_str()
            .to_owned()
    }

    /// A provider state's params: this charge by invoice-app, for `minor_units` EUR.
    fn params(&self, minor_units: i64) -> Value {
        json!({
            "idempotency_key": self.key(),
            "invoice_id": self.invoice_id,
            "customer_id": self.customer_id,
            "minor_units": minor_units,
            "currency": "EUR",
        })
    }

    fn request(&self) -> ChargeRequest {
        ChargeRequest {
            invoice_id: InvoiceId::parse(self.invoice_id).expect("valid invoice id"),
            customer_id: CustomerId::parse(self.customer_id).expect("valid customer id"),
            amount: Money::new(self.minor_units, Currency::Eur).expect("valid amount"),
        }
    }

    /// The charge through the real client: its outcome and the HTTP status. The mock server
    /// is closed right after the call, so that a request off the pact fails the test with
    /// the mock server's account of it, before any outcome is looked at.
    async fn send(
        &self,
        server: Box<dyn ValidatingMockServer>,
        token: &str,
    ) -> (CallOutcome, Option<u16>) {
        let client = PaymentClient::new(
            server.url().as_str(),
            SecretString::from(token),
            Duration::from_secs(5),
            1,
        )
        .expect("client builds");
        let key = idempotency_key_for(self.invoice_id, 0).expect("valid key");
        let result = client.charge(&key, &self.request()).await;
        drop(server);
        (result.outcome, result.http_status)
    }
}

impl Example {
    /// The lookup of this charge's key through the real client, as [`Example::send`] does.
    async fn look_up(&self, server: Box<dyn ValidatingMockServer>) -> (LookupOutcome, Option<u16>) {
        let client = PaymentClient::new(
            server.url().as_str(),
            SecretString::from(ANY_TOKEN),
            Duration::from_secs(5),
            1,
        )
        .expect("client builds");
        let key = idempotency_key_for(self.invoice_id, 0).expect("valid key");
        let result = client.lookup(&key).await;
        drop(server);
        (result.outcome, result.http_status)
    }
}

fn pact(out: &Path) -> PactBuilder {
    let mut builder = PactBuilder::new_v4(CONSUMER, PROVIDER);
    builder.with_output_dir(out);
    builder
}

/// "customer C001 has 10000.00 EUR", with the account in the params for the provider.
fn account_state(
    i: &mut InteractionBuilder,
    customer_id: &str,
    minor_units: i64,
    currency: Currency,
) {
    let balance = Money::new(minor_units, currency).expect("valid balance");
    i.given_with_params(
        format!("customer {customer_id} has {balance}"),
        &json!({
            "customer_id": customer_id,
            "minor_units": minor_units,
            "currency": currency.code(),
        }),
    );
}

/// The charge with a token the provider accepts, which the provider state supplies.
fn authorised_request(i: &mut InteractionBuilder, charge: &Example, minor_units: JsonPattern) {
    i.request.header_from_provider_state(
        "Authorization",
        "Bearer ${token}",
        term!(r"^Bearer .+$", format!("Bearer {ANY_TOKEN}")),
    );
    charge_request(i, charge, minor_units);
}

/// `POST /v1/charges` as the client sends it, but for the Authorization header.
fn charge_request(i: &mut InteractionBuilder, charge: &Example, minor_units: JsonPattern) {
    i.request
        .post()
        .path(CHARGES_PATH)
        .content_type("application/json")
        .header(headers::IDEMPOTENCY_KEY, term!(KEY_SHAPE, charge.key()))
        .json_body(json_pattern!({
            "invoice_id": like!(charge.invoice_id),
            "customer_id": like!(charge.customer_id),
            "amount": {
                "minor_units": minor_units,
                "currency": term!(CURRENCY_SHAPE, "EUR"),
            },
        }));
}

/// A created or replayed charge, as the client reads it.
fn charge_body(charge: &Example) -> JsonPattern {
    json_pattern!({
        "id": term!(CHARGE_ID_SHAPE, "ch_0195b4c07a107000800000000000c0de"),
        "status": "succeeded",
        "invoice_id": like!(charge.invoice_id),
        "customer_id": like!(charge.customer_id),
        "amount": {
            "minor_units": integer(charge.minor_units),
            "currency": term!(CURRENCY_SHAPE, "EUR"),
        },
        "created_at": term!(RFC3339_SHAPE, "2025-03-01T09:30:00.123Z"),
    })
}

/// An `application/problem+json` answer. The client branches on `status` and `code`, so
/// they are exact; the texts may say anything.
fn problem(i: &mut InteractionBuilder, status: u16, code: ErrorCode, title: &str, detail: &str) {
    i.response
        .status(status)
        .content_type(PROBLEM_JSON)
        .json_body(json_pattern!({
            "type": like!(format!("urn:invoice-platform:problem:{}", code.as_str())),
            "title": like!(title),
            "status": status,
            "code": code.as_str(),
            "detail": like!(detail),
        }));
}

/// A decline with `expected`, of the contract's `class`.
#[track_caller]
fn assert_declined(outcome: CallOutcome, expected: ErrorCode, class: DeclineClass) {
    assert!(
        matches!(&outcome, CallOutcome::Declined { code, class: c, .. } if *code == expected && *c == class),
        "expected a {} decline with {}, got {outcome:?}",
        class.as_str(),
        expected.as_str()
    );
}

/// Any integer: amounts are integer minor units, never floats (a type match would take 12.5).
#[derive(Debug)]
struct Integer(i64);

impl Pattern for Integer {
    type Matches = Value;

    fn to_example(&self) -> Value {
        json!(self.0)
    }

    fn to_example_bytes(&self) -> Vec<u8> {
        self.0.to_string().into_bytes()
    }

    fn extract_matching_rules(&self, path: DocPath, rules_out: &mut MatchingRuleCategory) {
        rules_out.add_rule(path, MatchingRule::Integer, RuleLogic::And);
    }
}

fn integer(example: i64) -> JsonPattern {
    JsonPattern::pattern(Integer(example))
}

/// A fresh directory for this run's pact, removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("pact-consumer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory created");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replaces the committed pact with this run's, once every interaction has passed.
fn publish(out: &Path) {
    let pacts = test_support::repo_root().join("pacts");
    std::fs::create_dir_all(&pacts).expect("pacts/ created");
    std::fs::copy(out.join(PACT_FILE), pacts.join(PACT_FILE)).expect("pact copied into pacts/");
}
