//! actix handlers only: extract, convert, call, respond. One file per resource.

mod accounts;
mod auth;
mod charges;
mod health;
mod observe;
mod pact_states;

use actix_web::{HttpResponse, guard, web};

pub use auth::Caller;
pub use observe::observe;

use crate::error::{ApiError, json_error, path_error, query_error};

/// Charge bodies are a few hundred bytes; anything near this is not a charge.
const JSON_LIMIT: usize = 16 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT)
            .error_handler(json_error),
    )
    .app_data(web::PathConfig::default().error_handler(path_error))
    .app_data(web::QueryConfig::default().error_handler(query_error))
    .service(
        resource(api_contract::CHARGES_PATH, "GET, HEAD, POST")
            .route(web::post().to(charges::create))
            .route(get().to(charges::lookup)),
    )
    .service(
        resource(
            &format!("{}/{{id}}", api_contract::CHARGES_PATH),
            "GET, HEAD",
        )
        .route(get().to(charges::get)),
    )
    .service(
        resource(
            &format!("{}/{{customer_id}}", api_contract::ACCOUNTS_PATH),
            "GET, HEAD",
        )
        .route(get().to(accounts::get)),
    )
    .service(resource("/healthz", "GET, HEAD").route(get().to(health::healthz)))
    .service(resource("/readyz", "GET, HEAD").route(get().to(health::readyz)))
    .default_service(web::to(not_found));
}

/// The metrics listener's only route (`METRICS_ADDR`).
pub fn metrics_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/metrics", "GET, HEAD").route(get().to(health::metrics)))
        .default_service(web::to(not_found));
}

/// Where Pact verifiers send state changes when `PACT_PROVIDER_STATES=on`.
pub const PACT_STATES_PATH: &str = "/_pact/provider-states";

pub fn pact_state_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(PACT_STATES_PATH, "POST").route(web::post().to(pact_states::change)));
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
