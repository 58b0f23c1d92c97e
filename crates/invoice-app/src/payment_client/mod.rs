//! invoice-app's client of payment-provider: one charge call, with the bearer token, the
//! invoice's stable idempotency key and the W3C trace context. Retries live in `billing`,
//! which records every attempt.

mod token;
mod transformers;

use std::time::Duration;

use api_contract::{CHARGES_PATH, ChargeRequest, IdempotencyKey, headers};
use opentelemetry::propagation::Injector;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::ExposeSecret;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::{CallOutcome, Sent};
pub use token::ProviderToken;

#[derive(Clone)]
pub struct PaymentClient {
    http: reqwest::Client,
    charges_url: String,
    token: ProviderToken,
}

/// A single call's outcome, the HTTP status when one came back, and whether it left.
pub struct CallResult {
    pub outcome: CallOutcome,
    pub http_status: Option<u16>,
    pub sent: Sent,
}

impl PaymentClient {
    pub fn new(
        base_url: &str,
        token: impl Into<ProviderToken>,
        timeout: Duration,
        max_connections: usize,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .pool_max_idle_per_host(max_connections)
            .build()?;
        Ok(PaymentClient {
            http,
            charges_url: format!("{}{CHARGES_PATH}", base_url.trim_end_matches('/')),
            token: token.into(),
        })
    }

    /// `POST /v1/charges` once.
    #[tracing::instrument(name = "charge", skip_all, fields(invoice_id = %request.invoice_id, otel.kind = "client"))]
    pub async fn charge(&self, key: &IdempotencyKey, request: &ChargeRequest) -> CallResult {
        let mut trace_headers = HeaderMap::new();
        let context = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&context, &mut HeaderInjector(&mut trace_headers));
        });
        let sent = self
            .http
            .post(&self.charges_url)
            .bearer_auth(self.token.current().expose_secret())
            .header(headers::IDEMPOTENCY_KEY, key.as_str())
            .headers(trace_headers)
            .json(request)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                return CallResult {
                    outcome: transformers::from_send_error(&e),
                    http_status: None,
                    // Refused at connect: nothing left. Anything later: it may have arrived.
                    sent: if e.is_connect() || e.is_builder() {
                        Sent::No
                    } else {
                        Sent::Unknown
                    },
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = transformers::retry_after(response.headers());
        let replayed = response
            .headers()
            .get(headers::IDEMPOTENT_REPLAYED)
            .is_some_and(|v| v.as_bytes() == b"true");
        let outcome = match response.bytes().await {
            Ok(body) => transformers::from_response(status, &body, retry_after, replayed),
            // The answer was lost on the way: for a success that means we don't know.
            Err(e) => CallOutcome::Unknown {
                reason: format!("reading the response ({status}) failed: {e}"),
            },
        };
        CallResult {
            outcome,
            http_status: Some(status),
            sent: Sent::Yes,
        }
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
