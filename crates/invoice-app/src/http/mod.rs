//! actix handlers only: extract, convert, call, respond. One file per resource.

mod health;
mod invoices;
mod observe;
mod pay_runs;

use actix_web::{HttpResponse, web};

pub use observe::observe;

use crate::error::{ApiError, json_error, path_error, query_error};

/// An invoice body is a few hundred bytes.
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
        web::resource("/invoices")
            .route(web::get().to(invoices::list))
            .route(web::post().to(invoices::create))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/invoices/pay")
            .route(web::post().to(pay_runs::pay_now))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/invoices/{id}")
            .route(web::get().to(invoices::get))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/pay-runs")
            .route(web::post().to(pay_runs::start))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/pay-runs/{id}")
            .route(web::get().to(pay_runs::get))
            .default_service(web::to(method_not_allowed)),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(health::metrics))
    .route("/openapi.json", web::get().to(health::openapi))
    .default_service(web::to(not_found));
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such resource".to_owned()))
}
