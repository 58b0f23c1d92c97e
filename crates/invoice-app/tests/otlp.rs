//! The real binary exports its spans the way an OpenTelemetry Collector receives them:
//! OTLP/HTTP, protobuf, `POST /v1/traces` under OTEL_EXPORTER_OTLP_ENDPOINT, with the
//! service's name on the resource. Spans still buffered are sent on SIGTERM.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

type Received = Arc<Mutex<Vec<(String, web::Bytes)>>>;

/// Answers like a collector: 200 with an empty protobuf response, keeping each body.
fn collector(received: Received) -> (u16, actix_web::dev::ServerHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
    let port = listener.local_addr().expect("address").port();
    let server = HttpServer::new(move || {
        let received = received.clone();
        App::new().default_service(web::to(
            move |req: actix_web::HttpRequest, body: web::Bytes| {
                let received = received.clone();
                async move {
                    if let Ok(mut bodies) = received.lock() {
                        bodies.push((req.path().to_owned(), body));
                    }
                    HttpResponse::Ok()
                        .content_type("application/x-protobuf")
                        .finish()
                }
            },
        ))
    })
    .workers(1)
    .listen(listener)
    .expect("listens")
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (port, handle)
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .and_then(|v| match v {
            AnyValue::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector() {
    let received = Received::default();
    let (collector_port, collector_handle) = collector(received.clone());

    let dir = std::env::temp_dir().join(format!("ia-otlp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_invoice-app"))
        .env_clear()
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", dir.join("ia.db"))
        .env("SEED", "none")
        .env("PAY_SCHEDULE", "off")
        .env("LOG_FORMAT", "json")
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{collector_port}"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("invoice-app starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut listed = false;
    for _ in 0..200 {
        if let Ok(r) = client
            .get(format!("{base}/invoices"))
            .bearer_auth(invoice_app::auth::DEV_API_KEY)
            .send()
            .await
            && r.status().is_success()
        {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A graceful stop flushes the spans the batch exporter still holds.
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    let exited = child.wait().is_ok_and(|s| s.success());
    collector_handle.stop(true).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(listed, "invoice-app did not answer GET /invoices");
    assert!(
        stopped && exited,
        "invoice-app did not stop cleanly on SIGTERM"
    );

    let bodies = received.lock().expect("bodies").clone();
    assert!(!bodies.is_empty(), "nothing reached the collector");
    let mut spans = Vec::new();
    for (path, body) in bodies {
        assert_eq!(path, "/v1/traces");
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.unwrap_or_default();
            assert_eq!(
                text(&resource.attributes, "service.name").as_deref(),
                Some("invoice-app")
            );
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    let request = spans
        .iter()
        .find(|s| s.name == "GET /invoices")
        .unwrap_or_else(|| {
            panic!(
                "no span for the request among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        text(&request.attributes, "http.route").as_deref(),
        Some("/invoices")
    );
    assert_eq!(request.trace_id.len(), 16, "a W3C trace id");
}
