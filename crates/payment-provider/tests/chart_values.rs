//! The chart refuses what payment-provider would refuse: every edge of every setting that
//! the chart's schema allows and its ConfigMap passes on starts the service.

use std::path::Path;

use payment_provider::config::Config;
use payment_provider::testing::chart_config_edges;

#[test]
fn every_value_the_chart_allows_is_one_the_service_starts_with() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/payment-provider");
    let edges = chart_config_edges(&chart);
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
