//! Pact provider states over HTTP, so any Pact verifier (not only this repository's test)
//! can check the committed pact against a running provider. Test mode only: it is off
//! unless `PACT_PROVIDER_STATES=on`, which start-up accepts only on SQLite with the
//! development token, because every state change empties the ledger.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, bail};
use api_contract::{ChargeRequest, CustomerId, IdempotencyKey, InvoiceId, Money};
use chrono::{TimeDelta, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::accounts;
use crate::auth::DEV_TOKEN;
use crate::charging::{ChargeReply, Charging};
use crate::db::{self, DbConn, DbError, idempotency};
use crate::domain::{AccountAction, ChargeCommand};
use crate::seed;

/// The caller the pact's consumer is.
const CONSUMER: &str = "invoice-app";
/// A caller other than the consumer, whose keys the consumer must not see.
const OTHER_CALLER: &str = "another-caller";

/// A verifier's state-change request, as Pact verifiers send it.
#[derive(Debug, Deserialize)]
pub struct StateChange {
    pub state: String,
    #[serde(default)]
    pub params: HashMap<String, Value>,
    #[serde(default)]
    pub action: Action,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Setup,
    Teardown,
}

/// Database connections a state holds until the next state change, so that the provider
/// finds none (see "the database is unavailable").
#[derive(Default)]
pub struct HeldConnections(Mutex<Vec<DbConn>>);

impl HeldConnections {
    /// Holds `connections` instead of what was held (nothing, to let go of them all).
    fn replace(&self, connections: Vec<DbConn>) {
        // A lock poisoned by a panic elsewhere guards nothing half-done: use it anyway.
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = connections;
    }
}

/// Applies `change` to an empty ledger and a provider without faults (so it works whether
/// or not the verifier sends teardowns) and returns the values the pact's provider-state
/// generators ask for.
pub async fn apply(
    state: &Charging,
    held: &HeldConnections,
    change: &StateChange,
) -> anyhow::Result<Value> {
    held.replace(Vec::new());
    state.faults.outage.store(false, Ordering::Relaxed);
    state.faults.rate_limited.store(false, Ordering::Relaxed);
    db::run(&state.pool, |c| db::wipe(c).map_err(DbError::from)).await?;
    if change.action == Action::Setup {
        set_up(state, held, change).await?;
    }
    // `Bearer ${token}` in the pact: the token this provider accepts from invoice-app.
    Ok(serde_json::json!({ "token": DEV_TOKEN }))
}

async fn set_up(
    state: &Charging,
    held: &HeldConnections,
    change: &StateChange,
) -> anyhow::Result<()> {
    let name = change.state.as_str();
    match name {
        "" => {}
        "the provider is unavailable" => state.faults.outage.store(true, Ordering::Relaxed),
        // The provider limits no one by itself: this is its injected 429 (faults.rs).
        "the provider is rate limiting invoice-app" => {
            state.faults.rate_limited.store(true, Ordering::Relaxed);
        }
        "the database is unavailable" => hold_every_connection(state, held).await?,
        // The development token is the only one accepted here.
        _ if name.starts_with("the token ") && name.ends_with(" was never issued") => {
            if name.contains(DEV_TOKEN) {
                bail!("that token is the one this provider accepts");
            }
        }
        // Funded enough, so only the status stands between the charge and the money; set
        // by the operators' own action (`payment-provider accounts hold|close`).
        _ if name.starts_with("the account of customer ") && name.ends_with(" is on hold") => {
            funded_account(state, change, AccountAction::Hold).await?;
        }
        _ if name.starts_with("the account of customer ") && name.ends_with(" is closed") => {
            funded_account(state, change, AccountAction::Close).await?;
        }
        // The ledger is empty: nobody has an account.
        _ if name.starts_with("customer ") && name.ends_with(" has no account") => {
            text(change, "customer_id")?;
        }
        _ if name.starts_with("customer ") && name.contains(" has ") => {
            fund(
                state,
                CustomerId::parse(text(change, "customer_id")?)?,
                money(change)?,
            )
            .await?;
        }
        _ if name.starts_with("a charge with key ") && name.ends_with(" already succeeded") => {
            charge_once(state, change).await?;
        }
        // The params are the earlier charge, which the pact's request differs from.
        _ if name.starts_with("key ")
            && name.ends_with(" was used for a charge of another amount") =>
        {
            charge_once(state, change).await?;
        }
        _ if name.starts_with("a request with key ") && name.ends_with(" is in flight") => {
            hold_in_flight(state, change).await?;
        }
        // The account holds less than the charge, which is declined and its key completed.
        _ if name.starts_with("a charge with key ")
            && name.ends_with(" was declined for insufficient funds") =>
        {
            decline_once(state, change).await?;
        }
        // The very key, charged by someone else: a lookup by invoice-app must not see it.
        _ if name.starts_with("key ") && name.ends_with(" was used by another caller only") => {
            let request = request_of(change)?;
            fund(state, request.customer_id.clone(), request.amount).await?;
            match state.charge(command(OTHER_CALLER, change, request)?).await {
                Ok(ChargeReply::Created(_)) => {}
                Ok(other) => bail!("the other caller's charge did not succeed: {other:?}"),
                Err(e) => bail!("the other caller's charge failed: {e}"),
            }
        }
        _ => bail!("no set-up for provider state {name:?}"),
    }
    Ok(())
}

async fn fund(state: &Charging, customer_id: CustomerId, balance: Money) -> anyhow::Result<()> {
    let account = api_contract::AccountResponse {
        customer_id,
        balance,
    };
    seed::insert(&state.pool, vec![account]).await.map(|_| ())
}

/// Opens the account the state's params describe, then applies the operator's `action`.
async fn funded_account(
    state: &Charging,
    change: &StateChange,
    action: AccountAction,
) -> anyhow::Result<()> {
    let customer = CustomerId::parse(text(change, "customer_id")?)?;
    fund(state, customer.clone(), money(change)?).await?;
    accounts::change_status(&state.pool, customer, action).await?;
    Ok(())
}

/// Makes the charge the state describes, as invoice-app would: its key is then completed.
async fn charge_once(state: &Charging, change: &StateChange) -> anyhow::Result<()> {
    let cmd = funded_command(state, change).await?;
    match state.charge(cmd).await {
        Ok(ChargeReply::Created(_)) => Ok(()),
        Ok(other) => bail!("the first charge did not succeed: {other:?}"),
        Err(e) => bail!("the first charge failed: {e}"),
    }
}

/// Makes the charge the state describes against an account that holds less than it: the
/// key is completed with the decline.
async fn decline_once(state: &Charging, change: &StateChange) -> anyhow::Result<()> {
    let request = request_of(change)?;
    let short = Money::new(request.amount.minor_units() - 1, request.amount.currency())?;
    fund(state, request.customer_id.clone(), short).await?;
    match state.charge(command(CONSUMER, change, request)?).await {
        Ok(ChargeReply::Declined(_)) => Ok(()),
        Ok(other) => bail!("the charge was not declined: {other:?}"),
        Err(e) => bail!("the charge failed: {e}"),
    }
}

/// Claims the key for the charge the state describes, as the provider does when a request
/// arrives, and leaves the claim fresh and unfinished: another request is processing it.
/// The account could pay, so only the key stands between a retry and a charge.
async fn hold_in_flight(state: &Charging, change: &StateChange) -> anyhow::Result<()> {
    let cmd = funded_command(state, change).await?;
    let stale = TimeDelta::from_std(state.stale_claim_after)?;
    let begin = db::run(&state.pool, move |c| {
        idempotency::begin(
            c,
            &cmd.caller,
            cmd.key.as_str(),
            &cmd.request_hashes,
            Utc::now().naive_utc(),
            stale,
        )
        .map_err(DbError::from)
    })
    .await?;
    match begin {
        idempotency::Begin::Acquired { .. } => Ok(()),
        other => bail!("the key could not be claimed: {other:?}"),
    }
}

/// Takes every connection of the pool until the next state change: a charge then waits
/// for one as long as the pool lets it and fails the way it does when the database
/// accepts no connection (a 503 with `Retry-After`).
async fn hold_every_connection(state: &Charging, held: &HeldConnections) -> anyhow::Result<()> {
    let pool = state.pool.clone();
    let connections = tokio::task::spawn_blocking(move || {
        (0..pool.max_size())
            .map(|_| pool.get())
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;
    held.replace(connections);
    Ok(())
}

/// The charge command the state's params describe, by invoice-app, its account funded.
async fn funded_command(state: &Charging, change: &StateChange) -> anyhow::Result<ChargeCommand> {
    let request = request_of(change)?;
    fund(state, request.customer_id.clone(), request.amount).await?;
    command(CONSUMER, change, request)
}

/// The charge request the state's params describe.
fn request_of(change: &StateChange) -> anyhow::Result<ChargeRequest> {
    Ok(ChargeRequest {
        invoice_id: InvoiceId::parse(text(change, "invoice_id")?)?,
        customer_id: CustomerId::parse(text(change, "customer_id")?)?,
        amount: money(change)?,
    })
}

/// `request` by `caller`, under the state's `idempotency_key`.
fn command(
    caller: &str,
    change: &StateChange,
    request: ChargeRequest,
) -> anyhow::Result<ChargeCommand> {
    let key = IdempotencyKey::parse(text(change, "idempotency_key")?)?;
    ChargeCommand::parse(caller.to_owned(), key, request).map_err(anyhow::Error::msg)
}

fn text<'a>(change: &'a StateChange, param: &str) -> anyhow::Result<&'a str> {
    change
        .params
        .get(param)
        .and_then(Value::as_str)
        .with_context(|| format!("param {param:?} (a string) is missing"))
}

/// The `minor_units` and `currency` params.
fn money(change: &StateChange) -> anyhow::Result<Money> {
    let minor_units = change
        .params
        .get("minor_units")
        .and_then(Value::as_i64)
        .context("param \"minor_units\" (an integer) is missing")?;
    let currency = text(change, "currency")?.parse()?;
    Ok(Money::new(minor_units, currency)?)
}
