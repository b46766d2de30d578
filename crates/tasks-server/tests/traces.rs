//! Traces: with the OTLP export on, a request that carries a W3C
//! `traceparent` yields a `request` span in that trace, child of the
//! caller's span, with a `db.*` span as its child; no attribute carries a
//! token, a secret or task text. The receiver is a small OTLP/HTTP
//! (protobuf) endpoint on 127.0.0.1, decoding with `opentelemetry-proto`.
//!
//! A test binary of its own: the trace layer is part of the process-wide
//! subscriber, installed here as `main` installs it.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, with the message"
)]

#[path = "api/helpers.rs"]
mod helpers;

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpResponse, HttpServer, web};
use helpers::{Backend, SECRET, TestApp};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::{AnyValue as Any, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use reqwest::Method;
use serde_json::json;
use tasks_server::settings::Traces;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Each export's service name and spans.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// Accepts OTLP/HTTP protobuf exports at `/v1/traces`; returns its port.
fn receiver(received: Received) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let received = Arc::clone(&received);
        App::new().route(
            "/v1/traces",
            web::post().to(move |body: web::Bytes| {
                let received = Arc::clone(&received);
                async move {
                    let export = ExportTraceServiceRequest::decode(body).unwrap();
                    let mut received = received.lock().unwrap();
                    for resource in export.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == "service.name")
                            .map(|kv| text(kv.value.as_ref()))
                            .unwrap_or_default();
                        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                            received.push((service.clone(), span));
                        }
                    }
                    HttpResponse::Ok()
                        .content_type("application/x-protobuf")
                        .finish()
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    port
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(value: Option<&Any>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_traceparent_exports_a_request_span_with_database_children() {
    let received = Received::default();
    let port = receiver(Arc::clone(&received));
    let traces = Traces {
        endpoint: format!("http://127.0.0.1:{port}/v1/traces"),
    };
    let (layer, guard) = tasks_server::telemetry::traces_layer(&traces).unwrap();
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .unwrap();

    let app = TestApp::spawn(Backend::Postgres).await;
    let token = app.token("trace-user");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let title = "a private title 7c1e";
    let res = app
        .client
        .post(app.url("/api/tasks"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({ "title": title, "description": "private notes 9d2f" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // A request without traceparent starts a trace of its own.
    let listed = app
        .request(Method::GET, "/api/tasks", Some(&token), None)
        .await;
    assert_eq!(listed.status(), 200);

    let flushed = tokio::task::spawn_blocking(move || {
        guard.flush();
        guard
    });
    let guard = flushed.await.unwrap();
    let (services, spans): (Vec<_>, Vec<_>) = received.lock().unwrap().iter().cloned().unzip();
    drop(guard);
    assert!(services.iter().all(|s| s == "tasks-server"), "{services:?}");

    let trace = hex::decode(trace_id).unwrap();
    let request = spans
        .iter()
        .find(|s| s.name == "request" && s.trace_id == trace)
        .unwrap_or_else(|| panic!("no request span in trace {trace_id}: {spans:#?}"));
    assert_eq!(
        request.parent_span_id,
        hex::decode(caller_span).unwrap(),
        "the request span continues the caller's span"
    );
    assert_eq!(
        attribute(request, "http.route"),
        Some(&AnyValue::StringValue("/api/tasks".to_owned()))
    );
    assert_eq!(
        attribute(request, "http.response.status_code"),
        Some(&AnyValue::IntValue(201))
    );
    let query = spans
        .iter()
        .find(|s| s.name == "db.create")
        .unwrap_or_else(|| panic!("no db.create span: {spans:#?}"));
    assert_eq!(query.trace_id, trace, "the query is in the caller's trace");
    assert_eq!(
        query.parent_span_id, request.span_id,
        "child of the request"
    );
    assert_eq!(
        attribute(query, "backend"),
        Some(&AnyValue::StringValue("postgres".to_owned()))
    );

    let list = spans
        .iter()
        .find(|s| s.name == "db.list")
        .unwrap_or_else(|| panic!("no db.list span: {spans:#?}"));
    assert_ne!(
        list.trace_id, trace,
        "a request without traceparent is a trace of its own"
    );
    let list_request = spans
        .iter()
        .find(|s| s.span_id == list.parent_span_id)
        .expect("the list query's parent was exported");
    assert_eq!(list_request.name, "request");
    assert!(list_request.parent_span_id.is_empty(), "a root span");

    // Nothing secret or private in any attribute or name.
    let mut everything = Vec::new();
    for span in &spans {
        everything.push(span.name.clone());
        for KeyValue { key, value, .. } in &span.attributes {
            everything.push(format!("{key}={}", text(value.as_ref())));
        }
    }
    assert!(everything.iter().any(|a| a.starts_with("request_id=")));
    for forbidden in [token.as_str(), SECRET, title, "private notes", "trace-user"] {
        assert!(
            !everything.iter().any(|a| a.contains(forbidden)),
            "{forbidden:?} in {everything:?}"
        );
    }
}

/// The binary, configured only by the standard variables: spans reach the
/// collector, with `OTEL_SERVICE_NAME`, and the ones still queued at SIGTERM
/// are exported before the process exits (the batch delay is 5 s; the
/// process stops well before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_through_the_otel_variables_and_flushes_on_exit() {
    use std::process::{Command, Stdio};

    let received = Received::default();
    let otlp = receiver(Arc::clone(&received));
    let dir = std::env::temp_dir().join(format!("tasks_traces_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = helpers::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tasks-server"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", port.to_string())
        .env("DATA_DIR", &dir)
        .env("JWT_SECRET", SECRET)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{otlp}"),
        )
        .env("OTEL_SERVICE_NAME", "tasks-e2e")
        .env("OTEL_BSP_SCHEDULE_DELAY", "5000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    helpers::wait_until_listening(child.stdout.take().unwrap());

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let res = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/tasks"))
        .bearer_auth(helpers::token_for("e2e-user"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{status}");

    let received = received.lock().unwrap().clone();
    let trace = hex::decode(trace_id).unwrap();
    let (service, request) = received
        .iter()
        .find(|(_, s)| s.name == "request" && s.trace_id == trace)
        .unwrap_or_else(|| panic!("no request span of trace {trace_id}: {received:#?}"));
    assert_eq!(service, "tasks-e2e");
    assert!(
        received
            .iter()
            .any(|(_, s)| s.name == "db.list" && s.parent_span_id == request.span_id),
        "the list query under the request span"
    );
}
