//! Provider side of the charge contract: the real payment-provider, on a random port with a
//! fresh SQLite database, verifies every pact in `pacts/` (written by invoice-app's
//! `pact_consumer` test). Provider states are set up through the provider's own db and seed
//! functions, and each interaction starts from an empty ledger.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use api_contract::{CHARGES_PATH, ChargeRequest, CustomerId, InvoiceId, Money, headers};
use async_trait::async_trait;
use diesel::RunQueryDsl;
use pact_models::provider_states::ProviderState;
use pact_verifier::callback_executors::ProviderStateExecutor;
use pact_verifier::verification_result::VerificationMismatchResult;
use pact_verifier::{
    FilterInfo, NullRequestFilterExecutor, PactSource, ProviderInfo, ProviderTransport,
    VerificationOptions, verify_provider_async,
};
use payment_provider::db::{self, schema};
use payment_provider::testing::{Backend, TEST_TOKEN, TestProvider};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pact_verification() {
    let sources = pact_files()
        .into_iter()
        .map(|file| PactSource::File(file.to_string_lossy().into_owned()))
        .collect();

    let outage = Arc::new(AtomicBool::new(false));
    let provider = TestProvider::spawn(Backend::Sqlite, |config| {
        config.faults.outage = outage.clone();
    })
    .await
    .expect("SQLite needs no configuration");
    let port = provider
        .base_url
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("base URL ends with the port");
    let info = ProviderInfo {
        name: "payment-provider".to_owned(),
        host: "127.0.0.1".to_owned(),
        transports: vec![ProviderTransport {
            transport: "http".to_owned(),
            port: Some(port),
            path: None,
            scheme: Some("http".to_owned()),
        }],
        ..ProviderInfo::default()
    };
    let options = VerificationOptions::<NullRequestFilterExecutor> {
        coloured_output: false,
        ..VerificationOptions::default()
    };
    let states = Arc::new(States {
        provider,
        outage,
        http: reqwest::Client::new(),
    });

    let result = verify_provider_async(
        info,
        sources,
        FilterInfo::None,
        vec![],
        &options,
        None,
        &states,
        None,
    )
    .await
    .expect("the verifier runs");

    let failures: Vec<String> = result
        .errors
        .iter()
        .map(|(interaction, why)| format!("- {interaction}: {}", describe(why)))
        .collect();
    assert!(
        failures.is_empty() && result.result,
        "payment-provider breaks the contract (verifier output above):\n{}",
        failures.join("\n")
    );
    // A verifier that verified nothing must not pass.
    assert!(
        !result.interaction_results.is_empty(),
        "the pacts in pacts/ hold no interaction with payment-provider"
    );
}

/// Every `*.json` in `<repo>/pacts/`; none is a failure.
fn pact_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pacts");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    assert!(
        !files.is_empty(),
        "no pact in {}: run invoice-app's consumer tests (cargo nextest run -p invoice-app --test pact_consumer)",
        dir.display()
    );
    files
}

fn describe(why: &VerificationMismatchResult) -> String {
    match why {
        VerificationMismatchResult::Mismatches { mismatches, .. } => mismatches
            .iter()
            .map(|m| m.description())
            .collect::<Vec<_>>()
            .join("; "),
        VerificationMismatchResult::Error { error, .. } => error.clone(),
    }
}

/// Sets up the provider states the pacts name.
struct States {
    provider: TestProvider,
    outage: Arc<AtomicBool>,
    http: reqwest::Client,
}

impl fmt::Debug for States {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("States")
            .field("base_url", &self.provider.base_url)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ProviderStateExecutor for States {
    async fn call(
        self: Arc<Self>,
        _interaction_id: Option<String>,
        state: &ProviderState,
        setup: bool,
        _client: Option<&reqwest_pact::Client>,
    ) -> anyhow::Result<HashMap<String, Value>> {
        let done = if setup {
            self.set_up(state).await
        } else {
            self.reset().await
        };
        // The verifier only logs a failed state change; say why where the test shows it.
        if let Err(e) = &done {
            eprintln!("provider state {:?}: {e:#}", state.name);
        }
        done?;
        // `Bearer ${token}` in the pact: the token this provider accepts from invoice-app.
        Ok(HashMap::from([("token".to_owned(), json!(TEST_TOKEN))]))
    }

    /// Teardown empties the ledger, so no interaction sees another's data.
    fn teardown(&self) -> bool {
        true
    }
}

impl States {
    async fn set_up(&self, state: &ProviderState) -> anyhow::Result<()> {
        let name = state.name.as_str();
        match name {
            // An interaction without a state.
            "" => {}
            "the provider is unavailable" => self.outage.store(true, Ordering::Relaxed),
            // TEST_TOKEN is the only token this provider accepts.
            _ if name.starts_with("the token ") && name.ends_with(" was never issued") => {}
            _ if name.starts_with("customer ") && name.ends_with(" has no account") => {
                let customer_id = text(state, "customer_id")?;
                if self.provider.balance(customer_id).await.is_some() {
                    bail!("customer {customer_id} has an account");
                }
            }
            _ if name.starts_with("customer ") && name.contains(" has ") => {
                let customer_id = text(state, "customer_id")?;
                let balance = money(state)?;
                if self.provider.balance(customer_id).await.is_some() {
                    bail!("customer {customer_id} is set up twice");
                }
                self.provider.fund(customer_id, balance).await;
            }
            _ if name.starts_with("a charge with key ") && name.ends_with(" already succeeded") => {
                self.charge_once(state).await?;
            }
            _ => bail!("no set-up for this provider state"),
        }
        Ok(())
    }

    /// Makes the charge the state describes, as invoice-app would: its key is then completed.
    async fn charge_once(&self, state: &ProviderState) -> anyhow::Result<()> {
        let request = ChargeRequest {
            invoice_id: InvoiceId::parse(text(state, "invoice_id")?)?,
            customer_id: CustomerId::parse(text(state, "customer_id")?)?,
            amount: money(state)?,
        };
        if self
            .provider
            .balance(request.customer_id.as_str())
            .await
            .is_none()
        {
            self.provider
                .fund(request.customer_id.as_str(), request.amount)
                .await;
        }
        let response = self
            .http
            .post(format!("{}{CHARGES_PATH}", self.provider.base_url))
            .bearer_auth(TEST_TOKEN)
            .header(headers::IDEMPOTENCY_KEY, text(state, "idempotency_key")?)
            .json(&request)
            .send()
            .await?;
        if response.status().as_u16() != 201 {
            bail!(
                "the first charge answered {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Back to a provider with no accounts, charges or keys, and no outage.
    async fn reset(&self) -> anyhow::Result<()> {
        self.outage.store(false, Ordering::Relaxed);
        db::run(&self.provider.pool, |c| {
            diesel::delete(schema::idempotency_keys::table).execute(c)?;
            diesel::delete(schema::charges::table).execute(c)?;
            diesel::delete(schema::accounts::table).execute(c)?;
            Ok::<_, anyhow::Error>(())
        })
        .await
    }
}

fn text<'a>(state: &'a ProviderState, param: &str) -> anyhow::Result<&'a str> {
    state
        .params
        .get(param)
        .and_then(Value::as_str)
        .with_context(|| format!("param {param:?} (a string) is missing"))
}

/// The `minor_units` and `currency` params.
fn money(state: &ProviderState) -> anyhow::Result<Money> {
    let minor_units = state
        .params
        .get("minor_units")
        .and_then(Value::as_i64)
        .context("param \"minor_units\" (an integer) is missing")?;
    let currency = text(state, "currency")?.parse()?;
    Ok(Money::new(minor_units, currency)?)
}
