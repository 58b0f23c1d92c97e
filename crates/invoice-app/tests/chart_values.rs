//! The chart refuses what invoice-app would refuse: every edge of every setting that the
//! chart's schema allows and its ConfigMap passes on starts the service. The one rule across
//! settings (a claim lease covers the retry budget plus two charge timeouts) the chart's
//! template checks itself (scripts/charts/values/invalid/invoice-app/claim-lease.yaml), so
//! here the other settings are held where that rule always holds.

use invoice_app::config::Config;
use test_support::chart_config_edges;

#[test]
fn every_value_the_chart_allows_is_one_the_service_starts_with() {
    let edges = chart_config_edges("invoice-app");
    assert!(edges.len() >= 10, "too few settings found: {edges:?}");
    let roomy = |name: &str| match name {
        "CLAIM_LEASE_SECS" => Some("86400".to_owned()),
        "RETRY_MAX_ELAPSED_SECS" => Some("1".to_owned()),
        "CHARGE_TIMEOUT_MS" => Some("100".to_owned()),
        _ => None,
    };
    for (env, value) in edges {
        let parsed = Config::from_lookup(&|name| {
            if name == env {
                Some(value.clone())
            } else {
                roomy(name)
            }
        });
        assert!(
            parsed.is_ok(),
            "{env}={value}: {}",
            parsed.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }
}
