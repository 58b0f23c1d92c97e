//! The route table is the API: the router, the OpenAPI document and its committed snapshot
//! all follow it. `crates/invoice-app/openapi.json` is the snapshot of the generated
//! document: a change to the API shows up as a diff to review, and `make openapi`
//! (`UPDATE_OPENAPI=1`) writes the generated document over it.

use std::collections::BTreeSet;

use invoice_app::http::{Access, ROUTES, route};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};

const UPDATE: &str = "UPDATE_OPENAPI";

fn generated() -> String {
    invoice_app::http::openapi_json().expect("the document serialises")
}

#[test]
fn the_committed_openapi_document_is_the_generated_one() {
    let path = test_support::repo_root().join("crates/invoice-app/openapi.json");
    let generated = generated();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed == generated {
        return;
    }
    if std::env::var_os(UPDATE).is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("writes the snapshot");
        eprintln!("wrote {}: review and commit it", path.display());
        return;
    }
    let diff = similar::TextDiff::from_lines(&committed, &generated)
        .unified_diff()
        .context_radius(3)
        .header("openapi.json (committed)", "openapi.json (generated)")
        .to_string();
    panic!(
        "the committed OpenAPI document is not the one the code generates:\n\n{diff}\n\
         If the change is meant, write it with `make openapi` (or {UPDATE}=1 cargo nextest run \
         -p invoice-app -E 'test(openapi)'), then review and commit {}",
        path.display()
    );
}

/// Every row of the table is one operation of the document, under its method and path,
/// naming its scope; nothing else is.
#[test]
fn the_openapi_document_has_the_tables_operations() {
    let document: Value = serde_json::from_str(&generated()).expect("JSON");
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let table: BTreeSet<_> = ROUTES
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, table);
    for r in ROUTES {
        let operation = &document["paths"][r.path][r.method.as_str().to_lowercase()];
        let security = match r.access {
            Access::Open => json!([]),
            Access::Needs(scope) => json!([{"bearer": [scope.as_str()]}]),
        };
        assert_eq!(operation["security"], security, "{} {}", r.method, r.path);
        let ids: Vec<_> = ROUTES
            .iter()
            .map(|o| &document["paths"][o.path][o.method.as_str().to_lowercase()]["operationId"])
            .filter(|id| *id == &operation["operationId"])
            .collect();
        assert_eq!(
            ids.len(),
            1,
            "{} {}: operationId not unique",
            r.method,
            r.path
        );
    }
}

/// Every `$ref` names a schema of the document, and every schema is named somewhere.
#[test]
fn the_openapi_documents_references_resolve() {
    fn refs(value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.insert(target.clone());
                }
                map.values().for_each(|v| refs(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }
    let document: Value = serde_json::from_str(&generated()).expect("JSON");
    let mut found = BTreeSet::new();
    refs(&document, &mut found);
    let schemas: BTreeSet<_> = document["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .keys()
        .map(|name| format!("#/components/schemas/{name}"))
        .collect();
    assert_eq!(found, schemas);
}

/// The router and the metrics follow the table: what `/openapi.json` serves is the
/// generated document, each path answers another method with 405 and the methods of its
/// rows, and the server-error series of the routes the availability objective counts are
/// exported from 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_follows_the_table() {
    let app = TestApp::builder(Backend::Sqlite).spawn().await;
    let served = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("sent");
    assert_eq!(served.status().as_u16(), 200);
    assert_eq!(served.text().await.expect("body"), generated());
    for path in route::paths(ROUTES) {
        let concrete = path.replace("{id}", "0195b4c0-7a10-7000-8000-000000000002");
        let response = app
            .client
            .delete(app.url(&concrete))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), 405, "DELETE {path}");
        let allow = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(allow, route::allow(ROUTES, path), "DELETE {path}");
        crate::helpers::assert_problem(response, 405, "method_not_allowed").await;
    }
    let slo: Vec<_> = invoice_app::http::slo_labels().collect();
    assert!(slo.contains(&("POST", "/invoices/pay")), "{slo:?}");
    for (method, route) in slo {
        for status in ["500", "503"] {
            let sample = format!(
                r#"http_requests_total{{method="{method}",route="{route}",status="{status}"}}"#
            );
            assert_eq!(app.metric(&sample).await, Some(0.0), "{sample}");
        }
    }
}
