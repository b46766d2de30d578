//! Cross-cutting request handling: a request id on every response and log
//! line, security headers, and the error envelope on every error response
//! (including those actix-web produces itself: unknown routes, 405, malformed
//! query strings, ...).

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::HttpMessage as _;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{Error, HttpResponse};
use tracing::Instrument as _;

use crate::error::{envelope, error_type_for};

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The Content-Security-Policy of every response but the `/docs` pages: the
/// API serves JSON, never a page, so nothing may load and nobody may frame it.
pub const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The Content-Security-Policy of the Swagger UI pages under `/docs`: only
/// the vendored files from this origin. The vendored `index.html` has no
/// inline script or style; Swagger UI sets styles through the DOM (allowed),
/// draws icons from `data:` SVGs, and "Try it out" calls this origin. The one
/// inline `<style>` element is in its logo SVG, allowed by its hash
/// (`.logo_small_svg__cls-2{fill:#fff}.logo_small_svg__cls-3{fill:#85ea2d}`,
/// Swagger UI 5.17.14 as vendored by utoipa-swagger-ui 9); a Swagger UI
/// upgrade that changes it shows up as a CSP violation in
/// tests/interop/better-auth/browser.test.mjs.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='; img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Longest request target (path and query) served; longer ones get 414 with
/// the envelope. actix-http itself refuses targets over 64 KiB, with an empty
/// 400 that never reaches this code (see docs/API.md).
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Most header bytes (names, values and separators) a request may carry;
/// more get 431 with the envelope. actix-http itself refuses a request head
/// over 128 KiB (or over 96 headers) with an empty 431 that never reaches
/// this code.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The envelope for a request head over our limits, while it is still small
/// enough for actix-http to have handed it to the application.
fn oversized_head(req: &ServiceRequest) -> Option<HttpResponse> {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return Some(envelope(
            StatusCode::URI_TOO_LONG,
            error_type_for(StatusCode::URI_TOO_LONG),
            format!("The request URI is longer than {MAX_URI_BYTES} bytes"),
        ));
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Some(envelope(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            error_type_for(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            format!("The request headers are larger than {MAX_HEADER_BYTES} bytes"),
        ));
    }
    None
}

/// Wraps every request. Inner services turn their errors into responses (even
/// CORS rejections), so every error response passes through here.
pub async fn request_context(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<ResponseBody>, Error> {
    let request_id = incoming_request_id(&req).unwrap_or_else(new_request_id);
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        route = tracing::field::Empty,
    );
    continue_trace(&req, &span);
    let started = Instant::now();
    let method = req.method().clone();
    let request_body = share_request_body(&mut req);
    let mut res = match oversized_head(&req) {
        Some(rejection) => req.into_response(rejection),
        None => next
            .call(req)
            .instrument(span.clone())
            .await?
            .map_into_boxed_body(),
    };
    let status = res.status();
    if status.as_u16() >= 400 && !is_json(&res) {
        let detail = default_detail(&res);
        let replacement = copy_headers(
            res.response(),
            envelope(status, error_type_for(status), detail),
        );
        res = res.into_response(replacement);
    }
    let is_docs_page = res.request().path().starts_with("/docs/");
    // A resource that also matches with a trailing slash reports that
    // pattern first; the route is the same either way.
    let route = res.request().match_pattern().map(|mut pattern| {
        if pattern.len() > 1 && pattern.ends_with('/') {
            pattern.pop();
        }
        pattern
    });
    if let Some(pattern) = &route {
        span.record("route", pattern.as_str());
    }
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID.clone(), v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if is_docs_page { DOCS_CSP } else { API_CSP }),
    );
    let took = started.elapsed();
    describe_for_trace(&span, &method, route.as_deref(), status);
    crate::metrics::record_request(&method, route.as_deref(), status, took);
    let latency_ms = took.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), latency_ms, "request finished");
        } else {
            tracing::info!(status = status.as_u16(), latency_ms, "request finished");
        }
    });
    Ok(res.map_body(|_, body| ResponseBody {
        body,
        _request_body: request_body,
    }))
}

/// Makes the request span a child of the caller's W3C `traceparent` (a
/// Next.js frontend's trace), when it sent one. Without the OpenTelemetry
/// layer (traces off) this does nothing.
fn continue_trace(req: &ServiceRequest, span: &tracing::Span) {
    use opentelemetry::propagation::TextMapPropagator as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !req.headers().contains_key("traceparent") {
        return;
    }
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract(&HeaderExtractor(req.headers()));
    // An error means no OpenTelemetry layer: traces are off.
    let _ = span.set_parent(parent);
}

/// The request's OpenTelemetry attributes (semantic-convention names), set
/// on the exported span only, so the log lines stay as they are.
fn describe_for_trace(
    span: &tracing::Span,
    method: &Method,
    route: Option<&str>,
    status: StatusCode,
) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    span.set_attribute("http.request.method", crate::metrics::method_label(method));
    if let Some(route) = route {
        span.set_attribute("http.route", route.to_owned());
    }
    span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.set_status(opentelemetry::trace::Status::error(""));
    }
}

/// Reads `traceparent` / `tracestate` from actix's header map (the
/// `opentelemetry-http` extractor is for the `http` 1.x types).
struct HeaderExtractor<'a>(&'a actix_web::http::header::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

fn is_json(res: &ServiceResponse<BoxBody>) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// A client-safe message for an error response nobody enveloped.
fn default_detail(res: &ServiceResponse<BoxBody>) -> String {
    let status = res.status();
    match status.as_u16() {
        404 => "Not found".to_owned(),
        405 => format!(
            "Method {} is not allowed for this URL",
            res.request().method()
        ),
        // actix's own 4xx messages describe the request, never the server.
        400..=499 => res
            .response()
            .error()
            .map(ToString::to_string)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("Bad request")
                    .to_owned()
            }),
        _ => "Internal server error".to_owned(),
    }
}

/// Keeps headers such as `Allow`, `Retry-After` and CORS headers that the
/// original response carried.
fn copy_headers(from: &HttpResponse<BoxBody>, mut to: HttpResponse) -> HttpResponse {
    for (name, value) in from.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            to.headers_mut().insert(name.clone(), value.clone());
        }
    }
    to
}

/// Accepts a caller's `X-Request-Id` if it is short and plain, so a proxy's
/// id can be followed through; anything else is replaced.
fn incoming_request_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(&REQUEST_ID)?.to_str().ok()?;
    let plain = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    plain.then(|| value.to_owned())
}

/// A random per-process prefix and a counter: unique, unguessable enough for
/// correlation, and no system call per request.
fn new_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            return nanos as u64;
        }
        u64::from_le_bytes(bytes)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:016x}{n:08x}")
}

/// The request body, shared between the handler (through the request's
/// payload) and the response, so that it stays alive until the response has
/// been written.
type SharedBody = Rc<RefCell<Payload>>;

/// Replaces a request's body with a handle on it and returns the other
/// handle, or `None` for a request without a body.
///
/// Why: actix-http closes the connection after a response whose request body
/// was not read to the end only while that body is still referenced. Once
/// the handler has dropped it, actix instead drains a chunked body on the
/// same connection for as long as the client keeps it open, so a client that
/// stalls mid-body (after a 401, a 413 or a body timeout) would hold its
/// connection forever. Keeping the body referenced until the response is
/// written makes actix close the connection instead (after
/// `client_disconnect_timeout`).
fn share_request_body(req: &mut ServiceRequest) -> Option<SharedBody> {
    let payload = req.take_payload();
    if matches!(payload, Payload::None) {
        return None;
    }
    let shared = Rc::new(RefCell::new(payload));
    req.set_payload(Payload::Stream {
        payload: Box::pin(SharedBodyStream(Rc::clone(&shared))),
    });
    Some(shared)
}

struct SharedBodyStream(SharedBody);

impl futures_util::Stream for SharedBodyStream {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut payload = self.0.borrow_mut();
        Pin::new(&mut *payload).poll_next(cx)
    }
}

/// Every response's body: the handler's, plus the request body kept alive
/// until the response is written (see [`share_request_body`]). Not a
/// `BoxBody`: `BoxBody::new` would drop an empty body (a 204) and the request
/// body with it before actix looks at it.
pub struct ResponseBody {
    body: BoxBody,
    _request_body: Option<SharedBody>,
}

impl MessageBody for ResponseBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}
