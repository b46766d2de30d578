//! Cross-cutting request handling: a request id on every response and log
//! line, security headers, and the error envelope on every error response
//! (including those actix-web produces itself: unknown routes, 405, malformed
//! query strings, ...).

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse};
use tracing::Instrument as _;

use crate::error::{envelope, error_type_for};

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps every request. Inner services turn their errors into responses (even
/// CORS rejections), so every error response passes through here.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let request_id = incoming_request_id(&req).unwrap_or_else(new_request_id);
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        route = tracing::field::Empty,
    );
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;

    let mut res = result?.map_into_boxed_body();
    let status = res.status();
    if status.as_u16() >= 400 && !is_json(&res) {
        let detail = default_detail(&res);
        let replacement = copy_headers(
            res.response(),
            envelope(status, error_type_for(status), detail),
        );
        res = res.into_response(replacement);
    }
    if let Some(pattern) = res.request().match_pattern() {
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
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), latency_ms, "request finished");
        } else {
            tracing::info!(status = status.as_u16(), latency_ms, "request finished");
        }
    });
    Ok(res)
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
