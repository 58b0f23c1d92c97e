//! actix handlers only: extract, convert, call, respond. One file per resource.

mod accounts;
mod auth;
mod charges;
mod health;
mod observe;

use actix_web::{HttpResponse, web};

pub use auth::Caller;
pub use observe::observe;

use crate::error::{ApiError, json_error, path_error};

/// Charge bodies are a few hundred bytes; anything near this is not a charge.
const JSON_LIMIT: usize = 16 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT)
            .error_handler(json_error),
    )
    .app_data(web::PathConfig::default().error_handler(path_error))
    .service(
        web::resource(api_contract::CHARGES_PATH)
            .route(web::post().to(charges::create))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource(format!("{}/{{id}}", api_contract::CHARGES_PATH))
            .route(web::get().to(charges::get))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource(format!("{}/{{customer_id}}", api_contract::ACCOUNTS_PATH))
            .route(web::get().to(accounts::get))
            .default_service(web::to(method_not_allowed)),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(health::metrics))
    .default_service(web::to(not_found));
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such resource".to_owned()))
}
