//! The OpenAPI 3.1 document of the API port, generated from the route table: each row's
//! method, path and access, its [`Doc`](super::doc::Doc), and the schemas of the wire types
//! they name. Served at `/openapi.json`; `crates/invoice-app/openapi.json` is its committed
//! snapshot (`make openapi` writes it, a test fails while they differ).

use actix_web::{HttpResponse, web};
use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths};

use super::doc;
use super::route::{Method, Route};
use crate::error::ApiError;

/// The name of the security scheme every scoped operation names.
const BEARER: &str = "bearer";

const DESCRIPTION: &str = "Keeps invoices and pays the pending ones by charging them at \
payment-provider. Money is always integer minor units of an ISO 4217 currency. Every invoice \
and pay-run operation needs a bearer credential (an OAuth2/OIDC access token or an API key) \
with the scope it names; /healthz, /readyz and this document are open. Metrics are served on \
a separate port (METRICS_ADDR), not here.";

const BEARER_DESCRIPTION: &str = "An OAuth2/OIDC access token (JWT) from the configured \
issuer, or an API key. The scopes listed per operation (invoices:read, invoices:write, \
invoices:pay, invoices:manage) come from the token's scope or scp claim, or from the API \
key's configuration.";

/// The document of `routes`.
pub fn document(routes: &[Route]) -> OpenApi {
    let mut paths = Paths::new();
    let mut components = ComponentsBuilder::new()
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or API key")
                    .description(Some(BEARER_DESCRIPTION))
                    .build(),
            ),
        )
        .build();
    for route in routes {
        let (operation, schemas) = with_access(route).build();
        components.schemas.extend(schemas);
        let method = match route.method {
            Method::Get => HttpMethod::Get,
            Method::Post => HttpMethod::Post,
        };
        paths.add_path_operation(route.path, vec![method], operation);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title(env!("CARGO_PKG_NAME"))
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(DESCRIPTION)),
        )
        .security(Some([SecurityRequirement::new::<_, [&str; 0], &str>(
            BEARER,
            [],
        )]))
        .paths(paths)
        .components(Some(components))
        .build()
}

/// A route's doc with what its access brings: the scope it needs (or none), and for a
/// scoped one the answers of a missing or insufficient credential, and of an issuer whose
/// keys cannot be had (unless the doc says more about its 503).
fn with_access(route: &Route) -> doc::Doc {
    let doc = (route.doc)();
    let Some(scope) = route.scope() else {
        return doc.security(Vec::new());
    };
    let doc = doc
        .security(vec![SecurityRequirement::new(BEARER, [scope.as_str()])])
        .problem_with(
            401,
            "No credential, or one that is not valid (code unauthorized).",
            [("WWW-Authenticate", doc::challenge())],
        )
        .problem_with(
            403,
            &format!(
                "The credential lacks the scope {} (code insufficient_scope).",
                scope.as_str()
            ),
            [("WWW-Authenticate", doc::challenge())],
        );
    if doc.answers_status(503) {
        return doc;
    }
    doc.problem(
        503,
        "Database unavailable, or the token issuer's keys cannot be fetched yet.",
    )
}

/// The document as served: its JSON, or why it could not be written.
pub struct Served(pub Result<web::Bytes, String>);

/// `GET /openapi.json`: the OpenAPI 3.1 document of this API.
pub async fn serve(document: web::Data<Served>) -> Result<HttpResponse, ApiError> {
    match &document.0 {
        Ok(json) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(json.clone())),
        Err(e) => Err(ApiError::Internal(anyhow::anyhow!(
            "the OpenAPI document: {e}"
        ))),
    }
}

/// What `/openapi.json` answers.
pub fn serve_doc() -> doc::Doc {
    doc::Doc::new("openapi").answer(
        200,
        utoipa::openapi::ResponseBuilder::new()
            .description("This document.")
            .content(
                "application/json",
                utoipa::openapi::Content::new(Some(doc::object())),
            ),
    )
}

/// The document as pretty JSON, with a final newline (as the committed snapshot).
pub fn to_json(document: &OpenApi) -> serde_json::Result<String> {
    let mut json = document.to_pretty_json()?;
    json.push('\n');
    Ok(json)
}
