//! Provider side of the charge contract: the real payment-provider, on a random port with a
//! fresh SQLite database, verifies every pact in `pacts/` (written by invoice-app's
//! `pact_consumer` test). Provider states are set up over HTTP through the provider's own
//! `POST /_pact/provider-states` (`PACT_PROVIDER_STATES=on`), the same way any other Pact
//! verifier would set them up, and each starts from an empty ledger.

use std::path::PathBuf;
use std::sync::Arc;

use pact_verifier::callback_executors::HttpRequestProviderStateExecutor;
use pact_verifier::verification_result::VerificationMismatchResult;
use pact_verifier::{
    FilterInfo, NullRequestFilterExecutor, PactSource, ProviderInfo, ProviderTransport,
    VerificationOptions, verify_provider_async,
};
use payment_provider::http::PACT_STATES_PATH;
use test_support::{Backend, TestProvider};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pact_verification() {
    let sources = pact_files()
        .into_iter()
        .map(|file| PactSource::File(file.to_string_lossy().into_owned()))
        .collect();

    // Test mode as a verifier elsewhere would run it: state changes on, development token.
    let provider = TestProvider::spawn(Backend::Sqlite, |config| {
        config.callers = None;
        config.pact_states = true;
    })
    .await;
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
    let states = Arc::new(HttpRequestProviderStateExecutor {
        state_change_url: Some(format!("{}{PACT_STATES_PATH}", provider.base_url)),
        state_change_teardown: true,
        state_change_body: true,
        retries: 0,
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
    let dir = test_support::repo_root().join("pacts");
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
