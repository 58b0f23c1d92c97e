//! invoice-app's client of payment-provider: one charge call, with the bearer token, the
//! invoice's stable idempotency key and the W3C trace context. Retries live in `billing`,
//! which records every attempt.

mod token;
mod transformers;
mod trust;

use std::time::Duration;

use api_contract::{CHARGES_PATH, ChargeRequest, IDEMPOTENCY_KEY_PARAM, IdempotencyKey, headers};
use opentelemetry::propagation::Injector;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::ExposeSecret;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::{CallOutcome, LookupOutcome, Sent};
pub use token::ProviderToken;
pub use trust::read_ca_bundle;
use trust::{HttpSettings, ProviderHttp};

#[derive(Clone)]
pub struct PaymentClient {
    http: ProviderHttp,
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
        Self::trusting(base_url, token, timeout, max_connections, None)
    }

    /// As [`Self::new`], trusting the CAs of `ca_file` (PEM, read again when it changes)
    /// instead of the system's for an https:// provider.
    pub fn trusting(
        base_url: &str,
        token: impl Into<ProviderToken>,
        timeout: Duration,
        max_connections: usize,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let settings = HttpSettings {
            timeout,
            max_connections,
            https_only: base_url.starts_with("https://"),
        };
        let http = match ca_file {
            Some(path) => ProviderHttp::ca_file(settings, path.to_owned())?,
            None => ProviderHttp::system_roots(settings)?,
        };
        Ok(PaymentClient {
            http,
            charges_url: format!("{}{CHARGES_PATH}", base_url.trim_end_matches('/')),
            token: token.into(),
        })
    }

    /// `POST /v1/charges` once.
    #[tracing::instrument(name = "charge", skip_all, fields(invoice_id = %request.invoice_id, otel.kind = "client"))]
    pub async fn charge(&self, key: &IdempotencyKey, request: &ChargeRequest) -> CallResult {
        let sent = self
            .http
            .client()
            .post(&self.charges_url)
            .bearer_auth(self.token.current().expose_secret())
            .header(headers::IDEMPOTENCY_KEY, key.as_str())
            .headers(trace_headers())
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

/// A key lookup's outcome, the HTTP status when one came back, and whether it left.
pub struct LookupResult {
    pub outcome: LookupOutcome,
    pub http_status: Option<u16>,
    pub sent: Sent,
}

impl PaymentClient {
    /// `GET /v1/charges?idempotency_key=<key>` once: what the provider holds under `key`,
    /// read as a replay of the key's charge is. Charges nothing, so a lost answer is only a
    /// lookup to make again.
    #[tracing::instrument(name = "lookup", skip_all, fields(otel.kind = "client"))]
    pub async fn lookup(&self, key: &IdempotencyKey) -> LookupResult {
        let sent = self
            .http
            .client()
            .get(&self.charges_url)
            .query(&[(IDEMPOTENCY_KEY_PARAM, key.as_str())])
            .bearer_auth(self.token.current().expose_secret())
            .headers(trace_headers())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                return LookupResult {
                    outcome: LookupOutcome::Answer(transformers::from_send_error(&e)),
                    http_status: None,
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
        let outcome = match response.bytes().await {
            Ok(body) => transformers::from_lookup_response(status, &body, retry_after),
            Err(e) => LookupOutcome::Answer(CallOutcome::Unknown {
                reason: format!("reading the lookup's response ({status}) failed: {e}"),
            }),
        };
        LookupResult {
            outcome,
            http_status: Some(status),
            sent: Sent::Yes,
        }
    }
}

/// The current span's W3C trace context, as request headers.
fn trace_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(&mut headers));
    });
    headers
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
