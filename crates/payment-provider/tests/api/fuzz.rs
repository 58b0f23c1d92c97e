//! Hostile input on the charge call: generated bodies and keys never cause a 5xx, a panic
//! or a charge that was not asked for.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use crate::helpers::{Backend, eur, spawn_app};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid charge with one field replaced by any JSON value.
fn near_charge() -> impl Strategy<Value = Value> {
    (any_json(), 0..4usize).prop_map(|(v, which)| {
        let mut body = json!({"invoice_id": "i1", "customer_id": "C001",
                              "amount": {"minor_units": 100, "currency": "EUR"}});
        match which {
            0 => body["invoice_id"] = v,
            1 => body["customer_id"] = v,
            2 => body["amount"]["minor_units"] = v,
            _ => body["amount"]["currency"] = v,
        }
        body
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_charges_and_keys_never_cause_a_5xx() {
    let app = spawn_app(Backend::Sqlite).await;
    app.provider.fund("C001", eur(1_000_000_000)).await;
    let mut runner = TestRunner::deterministic();
    let bodies = prop_oneof![any_json(), near_charge()];
    let keys = "\\PC{0,300}";
    let mut created = 0;
    for i in 0..400 {
        let body = bodies.new_tree(&mut runner).expect("generates").current();
        let key = keys.new_tree(&mut runner).expect("generates").current();
        let mut request = app
            .client
            .post(app.url("/v1/charges"))
            .bearer_auth(&app.provider.token)
            .json(&body);
        // Half the requests carry a generated key (often invalid), half a fresh valid one.
        request = match reqwest::header::HeaderValue::from_str(&key) {
            Ok(value) if i % 2 == 0 => request.header("Idempotency-Key", value),
            _ => request.header("Idempotency-Key", format!("k{i}")),
        };
        let response = request.send().await.expect("sent");
        let status = response.status().as_u16();
        assert!(status < 500, "{body} with key {key:?}: {status}");
        if status == 201 {
            created += 1;
        } else {
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            assert_eq!(content_type, "application/problem+json", "{body}");
        }
    }
    // Only requests the provider answered 201 moved money.
    assert_eq!(app.provider.ledger().await.len(), created);
}
