//! Logs (JSON in containers, readable on a terminal), OpenTelemetry traces exported over
//! OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C trace-context propagation.

use std::io::IsTerminal;
use std::str::FromStr;

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON unless standard output is a terminal.
    Auto,
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(LogFormat::Auto),
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            other => Err(format!("{other:?} is not one of auto, json, pretty")),
        }
    }
}

/// Flushes pending spans when dropped; keep it alive for the life of the process.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("telemetry shutdown: {e}");
        }
    }
}

/// Installs the global subscriber. Call it outside the async runtime: the OTLP exporter
/// owns a blocking HTTP client.
pub fn init(service_name: &'static str, format: LogFormat) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service_name);
    }
    let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
    let otlp_configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if otlp_configured {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();

    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().compact().boxed()
    };
    install(service_name, provider, Some(logs))
}

/// Sends every span to `exporter` as it ends, and logs nothing: for tests that look at the
/// spans themselves.
pub fn init_with_exporter(
    service_name: &'static str,
    exporter: impl opentelemetry_sdk::trace::SpanExporter + 'static,
) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .build();
    install(service_name, provider, None)
}

type LogLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

fn install(
    service_name: &'static str,
    provider: SdkTracerProvider,
    logs: Option<LogLayer>,
) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing_subscriber::registry()
        .with(logs)
        .with(log_filter())
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name)))
        .try_init()?;
    Ok(TelemetryGuard { provider })
}

/// Reads W3C trace context from actix request headers.
pub struct HeaderExtractor<'a>(pub &'a actix_web::http::header::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// `RUST_LOG`, `info` by default. actix logs every malformed request at ERROR, though it is
/// the client's mistake and answered 400: that target stays off unless `RUST_LOG` names
/// `actix_http` itself, so hostile input cannot fill the error log.
fn log_filter() -> EnvFilter {
    let wanted = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let filter = if wanted.contains("actix_http") {
        wanted
    } else {
        format!("{wanted},actix_http::h1::dispatcher=off")
    };
    EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"))
}
