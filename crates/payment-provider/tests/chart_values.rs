//! The chart refuses what payment-provider would refuse: every edge of every setting that
//! the chart's schema allows and its ConfigMap passes on starts the service.

use payment_provider::config::Config;
use test_support::chart_config_edges;

#[test]
fn every_value_the_chart_allows_is_one_the_service_starts_with() {
    let edges = chart_config_edges("payment-provider");
    assert!(edges.len() >= 6, "too few settings found: {edges:?}");
    for (env, value) in edges {
        let parsed = Config::from_lookup(&|name| (name == env).then(|| value.clone()));
        assert!(
            parsed.is_ok(),
            "{env}={value}: {}",
            parsed.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }
}
