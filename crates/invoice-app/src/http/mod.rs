//! actix handlers only: extract, convert, call, respond. One file per resource.

mod auth;
mod health;
mod idempotency;
mod invoices;
mod observe;
mod pay_runs;

use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, guard, web};

pub use observe::observe;

use crate::error::{ApiError, json_error, path_error, query_error};

use auth::{require_pay, require_read, require_write};

/// An invoice body is a few hundred bytes.
const JSON_LIMIT: usize = 16 * 1024;

/// The API port: every invoice and pay-run route needs a credential with its scope (checked
/// before the body is read); health, readiness and the OpenAPI document stay open.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT)
            .error_handler(json_error),
    )
    .app_data(web::PathConfig::default().error_handler(path_error))
    .app_data(web::QueryConfig::default().error_handler(query_error))
    .service(
        resource("/invoices", "GET, HEAD, POST")
            .route(get().to(invoices::list).wrap(from_fn(require_read)))
            .route(
                web::post()
                    .to(invoices::create)
                    .wrap(from_fn(require_write)),
            ),
    )
    .service(
        resource("/invoices/pay", "POST")
            .route(web::post().to(pay_runs::pay_now).wrap(from_fn(require_pay))),
    )
    .service(
        resource("/invoices/{id}", "GET, HEAD")
            .route(get().to(invoices::get).wrap(from_fn(require_read))),
    )
    .service(
        resource("/pay-runs", "POST")
            .route(web::post().to(pay_runs::start).wrap(from_fn(require_pay))),
    )
    .service(
        resource("/pay-runs/{id}", "GET, HEAD")
            .route(get().to(pay_runs::get).wrap(from_fn(require_read))),
    )
    .service(resource("/healthz", "GET, HEAD").route(get().to(health::healthz)))
    .service(resource("/readyz", "GET, HEAD").route(get().to(health::readyz)))
    // Open: it describes the API's shape and holds no data, and clients read it before
    // they have a credential.
    .service(resource("/openapi.json", "GET, HEAD").route(get().to(health::openapi)))
    .default_service(web::to(not_found));
}

/// The metrics port: `/metrics` only, for Prometheus.
pub fn metrics_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/metrics", "GET, HEAD").route(get().to(health::metrics)))
        .default_service(web::to(not_found));
}

/// A resource that answers any method other than `allow` with 405 and an `Allow` header.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow })
    }))
}

/// GET, and HEAD with it (actix sends HEAD answers without their body).
fn get() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such resource".to_owned()))
}
