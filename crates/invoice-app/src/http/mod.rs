//! actix handlers only: extract, convert, call, respond. One file per resource, and one
//! route table ([`ROUTES`]) that the router, the request metrics' labels, the OpenAPI
//! document and the authentication tests read.

mod actions;
mod attempts;
mod auth;
mod doc;
mod health;
mod idempotency;
mod invoices;
mod observe;
pub mod openapi;
mod pay_runs;
pub mod route;

use std::sync::OnceLock;

use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, guard, web};

pub use observe::observe;
pub use route::{Access, Method, Route};

use crate::auth::Scope;
use crate::error::{ApiError, json_error, path_error, query_error};

/// Every operation of the API port. Adding one here puts it in the router (behind its
/// scope, with its `Allow` header), in the request metrics (from 0, when `slo`), in the
/// OpenAPI document and in the authentication tests. actix matches paths in this order, so a
/// fixed path (`/invoices/pay`) comes before a pattern that would take it (`/invoices/{id}`).
pub const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/invoices",
        access: Access::Needs(Scope::Read),
        slo: true,
        handler: |r| r.to(invoices::list),
        doc: invoices::list_doc,
    },
    Route {
        method: Method::Post,
        path: "/invoices",
        access: Access::Needs(Scope::Write),
        slo: true,
        handler: |r| r.to(invoices::create),
        doc: invoices::create_doc,
    },
    Route {
        method: Method::Post,
        path: "/invoices/pay",
        access: Access::Needs(Scope::Pay),
        slo: true,
        handler: |r| r.to(pay_runs::pay_now),
        doc: pay_runs::pay_now_doc,
    },
    Route {
        method: Method::Get,
        path: "/invoices/{id}",
        access: Access::Needs(Scope::Read),
        slo: true,
        handler: |r| r.to(invoices::get),
        doc: invoices::get_doc,
    },
    Route {
        method: Method::Get,
        path: "/invoices/{id}/attempts",
        access: Access::Needs(Scope::Read),
        slo: true,
        handler: |r| r.to(attempts::list),
        doc: attempts::list_doc,
    },
    Route {
        method: Method::Get,
        path: "/invoices/{id}/actions",
        access: Access::Needs(Scope::Read),
        slo: true,
        handler: |r| r.to(actions::list),
        doc: actions::list_doc,
    },
    Route {
        method: Method::Post,
        path: "/invoices/{id}/void",
        access: Access::Needs(Scope::Manage),
        slo: true,
        handler: |r| r.to(actions::void),
        doc: actions::void_doc,
    },
    Route {
        method: Method::Post,
        path: "/invoices/{id}/retry",
        access: Access::Needs(Scope::Manage),
        slo: true,
        handler: |r| r.to(actions::retry),
        doc: actions::retry_doc,
    },
    Route {
        method: Method::Post,
        path: "/invoices/{id}/resolve",
        access: Access::Needs(Scope::Manage),
        slo: true,
        handler: |r| r.to(actions::resolve),
        doc: actions::resolve_doc,
    },
    Route {
        method: Method::Post,
        path: "/pay-runs",
        access: Access::Needs(Scope::Pay),
        slo: true,
        handler: |r| r.to(pay_runs::start),
        doc: pay_runs::start_doc,
    },
    Route {
        method: Method::Get,
        path: "/pay-runs/{id}",
        access: Access::Needs(Scope::Read),
        slo: true,
        handler: |r| r.to(pay_runs::get),
        doc: pay_runs::get_doc,
    },
    Route {
        method: Method::Get,
        path: "/healthz",
        access: Access::Open,
        slo: false,
        handler: |r| r.to(health::healthz),
        doc: health::healthz_doc,
    },
    Route {
        method: Method::Get,
        path: "/readyz",
        access: Access::Open,
        slo: false,
        handler: |r| r.to(health::readyz),
        doc: health::readyz_doc,
    },
    // Open: it describes the API's shape and holds no data, and clients read it before
    // they have a credential.
    Route {
        method: Method::Get,
        path: "/openapi.json",
        access: Access::Open,
        slo: false,
        handler: |r| r.to(openapi::serve),
        doc: openapi::serve_doc,
    },
];

/// An invoice body is a few hundred bytes.
const JSON_LIMIT: usize = 16 * 1024;

/// The API port, from [`ROUTES`]: each scoped route checks its credential before the body
/// is read; a path answers other methods with 405 and its `Allow` header.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT)
            .error_handler(json_error),
    )
    .app_data(web::PathConfig::default().error_handler(path_error))
    .app_data(web::QueryConfig::default().error_handler(query_error))
    .app_data(served_openapi());
    for path in route::paths(ROUTES) {
        let mut resource = resource(path, route::allow(ROUTES, path));
        for r in ROUTES.iter().filter(|r| r.path == path) {
            let mut handled = (r.handler)(method(r.method));
            if let Some(scope) = r.scope() {
                handled = handled.wrap(from_fn(move |req, next| auth::require(scope, req, next)));
            }
            resource = resource.route(handled);
        }
        cfg.service(resource);
    }
    cfg.default_service(web::to(not_found));
}

/// The metrics port: `/metrics` only, for Prometheus.
pub fn metrics_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/metrics", "GET, HEAD".to_owned()).route(method(Method::Get).to(health::metrics)),
    )
    .default_service(web::to(not_found));
}

/// The `(method, route)` labels of the routes the availability objective counts.
pub fn slo_labels() -> impl Iterator<Item = (&'static str, &'static str)> {
    ROUTES.iter().filter(|r| r.slo).map(Route::labels)
}

/// The OpenAPI document `/openapi.json` serves, generated from [`ROUTES`].
pub fn openapi_json() -> serde_json::Result<String> {
    openapi::to_json(&openapi::document(ROUTES))
}

/// The served document, written once per process.
fn served_openapi() -> web::Data<openapi::Served> {
    static SERVED: OnceLock<web::Data<openapi::Served>> = OnceLock::new();
    SERVED
        .get_or_init(|| {
            web::Data::new(openapi::Served(
                openapi_json()
                    .map(web::Bytes::from)
                    .map_err(|e| e.to_string()),
            ))
        })
        .clone()
}

/// A resource that answers any method other than `allow` with 405 and an `Allow` header.
fn resource(path: &str, allow: String) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || {
        let allow = allow.clone();
        async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow }) }
    }))
}

/// The actix route of `method`: GET takes HEAD with it (actix sends HEAD answers without
/// their body).
fn method(method: Method) -> actix_web::Route {
    match method {
        Method::Get => web::route().guard(guard::Any(guard::Get()).or(guard::Head())),
        Method::Post => web::post(),
    }
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such resource".to_owned()))
}
