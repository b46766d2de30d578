//! Limits with clear errors: rate limit, nesting, header size, slow clients,
//! idle connections.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp, assert_error, read_until_closed};
use crate::on_both_backends;

async fn per_user_rate_limit_is_429_with_retry_after(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[("RATE_LIMIT_PER_MINUTE", "60"), ("RATE_LIMIT_BURST", "5")],
    )
    .await;
    let alice = app.token("alice");
    for _ in 0..5 {
        assert_eq!(app.list(&alice, "").await.status(), 200);
    }
    let res = app.list(&alice, "").await;
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_error(res, 429, "rate_limited").await;
    assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| (1..=60).contains(&s))));
    let bob = app.token("bob");
    assert_eq!(
        app.list(&bob, "").await.status(),
        200,
        "other users are unaffected"
    );
}

/// Past `RATE_LIMIT_MAX_KEYS` users the limiter forgets and starts afresh:
/// nobody is refused for it, and the limit still works afterwards. (The key
/// count itself is asserted in `ratelimit.rs`'s unit tests.)
async fn rate_limiter_over_its_user_cap_keeps_working(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("RATE_LIMIT_PER_MINUTE", "60"),
            ("RATE_LIMIT_BURST", "2"),
            ("RATE_LIMIT_MAX_KEYS", "5"),
        ],
    )
    .await;
    for i in 0..20 {
        let token = app.token(&format!("user-{i}"));
        assert_eq!(app.list(&token, "").await.status(), 200, "user-{i}");
    }
    let alice = app.token("alice");
    assert_eq!(app.list(&alice, "").await.status(), 200);
    assert_eq!(app.list(&alice, "").await.status(), 200);
    assert_error(app.list(&alice, "").await, 429, "rate_limited").await;
}

async fn deeply_nested_json_is_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let deep = format!(
        "{{\"title\":\"x\",\"description\":{}{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let res = app
        .client
        .post(app.url("/api/tasks"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "validation_error").await;
    let _ = json!(null);
}

async fn raw_request(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn oversized_headers_are_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let big = "a".repeat(128 * 1024);
    let request =
        format!("GET /api/tasks HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let response = raw_request(app.port, request.as_bytes()).await;
    let status: u16 = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        status == 431 || status == 400,
        "{}",
        &response[..response.len().min(200)]
    );
    // The server is still fine.
    assert_eq!(app.probe("/health").await, 200);
}

async fn slow_clients_are_cut_off(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("CLIENT_REQUEST_TIMEOUT", "1")]).await;
    let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    // Headers never finish: the server must not wait forever.
    stream
        .write_all(b"GET /api/tasks HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection was closed by the server");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

/// Status and JSON body of a raw HTTP/1.1 response.
fn parse_response(response: &str) -> (u16, String, serde_json::Value) {
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, head.to_ascii_lowercase(), json)
}

fn assert_raw_envelope(response: &str, status: u16, error_type: &str) -> serde_json::Value {
    let (got, head, body) = parse_response(response);
    assert_eq!(got, status, "{}", &response[..response.len().min(400)]);
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(head.contains("x-request-id: "), "{head}");
    assert_eq!(body["status_code"], status, "{body}");
    assert_eq!(body["error_type"], error_type, "{body}");
    body
}

/// Clients that send most of a body and stall get a 408 envelope and are
/// disconnected after CLIENT_BODY_TIMEOUT; meanwhile others are served.
async fn stalled_request_bodies_get_408_and_are_disconnected(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("CLIENT_BODY_TIMEOUT", "1")]).await;
    let token = app.token("alice");
    let mut stalled = Vec::new();
    for i in 0..6 {
        let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        // Half with Content-Length, half chunked: both must be cut off.
        let head = if i % 2 == 0 {
            format!(
                "POST /api/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n"
            )
        } else {
            format!(
                "POST /api/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
        };
        stream.write_all(head.as_bytes()).await.unwrap();
        let part = format!(
            "{{\"title\": \"stall\", \"description\": \"{}",
            "x".repeat(150_000)
        );
        if i % 2 == 0 {
            stream.write_all(part.as_bytes()).await.unwrap();
        } else {
            stream
                .write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes())
                .await
                .unwrap();
        }
        stalled.push(stream);
    }
    // While they stall, the service answers everybody else.
    assert_eq!(app.list(&token, "").await.status(), 200);
    app.create_ok(&token, "served meanwhile").await;
    for mut stream in stalled {
        let response = read_until_closed(&mut stream).await;
        let body = assert_raw_envelope(&response, 408, "request_timeout");
        assert!(body["detail"].as_str().unwrap().contains("body"), "{body}");
        let (_, head, _) = parse_response(&response);
        assert!(head.contains("connection: close"), "{head}");
    }
    let titles: Vec<_> = app
        .list_ok(&token)
        .await
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(titles, ["served meanwhile"], "no stalled body was stored");
}

/// A client that stalls in the middle of a body the service never reads
/// (here: no token, so a 401 before the body matters) is disconnected after
/// the answer; a chunked body used to be drained for as long as the client
/// kept the connection open.
async fn unread_stalled_bodies_do_not_hold_connections(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let task = app.create_ok(&token, "to delete").await;
    // An empty 204 answer too (its body is no body at all).
    let delete = format!(
        "DELETE /api/tasks/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
        task["id"]
    );
    for (request, status) in [
        (delete.as_str(), 204),
        (
            "POST /api/tasks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
            401,
        ),
        (
            "POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc",
            401,
        ),
        (
            "GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
            200,
        ),
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = read_until_closed(&mut stream).await;
        let (got, head, _) = parse_response(&response);
        assert_eq!(got, status, "{response}");
        assert!(head.contains("connection: close"), "{head}");
    }
}

/// A body cut short (the client closes its sending side) is a 400 with a
/// clean message, never actix's debug text.
async fn truncated_bodies_are_400_without_debug_text(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    for (framing, body) in [
        ("Content-Length: 100", "{\"title\":"),
        ("Transfer-Encoding: chunked", "5\r\n{\"tit\r\n"),
        ("Transfer-Encoding: chunked", "5\r\n{\"tit\r\nZZ\r\n"),
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        let request = format!(
            "POST /api/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n{body}"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        let response = read_until_closed(&mut stream).await;
        let err = assert_raw_envelope(&response, 400, "validation_error");
        let detail = err["detail"].as_str().unwrap();
        assert!(
            !detail.contains("None") && !detail.contains("payload") && !detail.contains("EOF"),
            "{detail}"
        );
        assert!(detail.contains("request body"), "{detail}");
    }
    assert!(app.list_ok(&token).await.is_empty());
}

/// Protocol-level errors, each exactly as docs/API.md says: the envelope and
/// the safety headers where the request reaches the application; an empty
/// answer from actix-http's parser (and a closed connection) where it cannot.
async fn protocol_errors_are_as_documented(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let enveloped = [
        (
            format!(
                "GET /api/tasks?q={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "a".repeat(20 * 1024)
            ),
            414,
            "uri_too_long",
        ),
        (
            format!(
                "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "a".repeat(60 * 1024)
            ),
            414,
            "uri_too_long",
        ),
        (
            format!(
                "GET /api/tasks HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
                "a".repeat(40 * 1024)
            ),
            431,
            "headers_too_large",
        ),
        (
            format!(
                "GET /health HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
                (0..40)
                    .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(1000)))
                    .collect::<String>()
            ),
            431,
            "headers_too_large",
        ),
    ];
    for (request, status, error_type) in enveloped {
        let response = raw_request(app.port, request.as_bytes()).await;
        assert_raw_envelope(&response, status, error_type);
        let (_, head, _) = parse_response(&response);
        assert!(head.contains("cache-control: no-store"), "{head}");
    }
    // Refused by actix-http's parser before any application code runs: an
    // empty body, no application headers, and the connection is closed.
    let unenveloped = [
        // A target over 64 KiB does not fit the http crate's `Uri`.
        (
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100 * 1024)),
            400,
        ),
        // A request head over 128 KiB.
        (
            format!("GET /api/tasks HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(140 * 1024)),
            431,
        ),
        // More than 96 headers.
        (
            format!(
                "GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..100).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()
            ),
            431,
        ),
        // Request smuggling shapes.
        (
            "POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_owned(),
            400,
        ),
        (
            "POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef".to_owned(),
            400,
        ),
    ];
    for (request, status) in unenveloped {
        let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        // The server may stop reading (and reset) before all of it is sent.
        let _ = stream.write_all(request.as_bytes()).await;
        let mut out = Vec::new();
        // Ends on close or reset; never hangs (a hang fails the test).
        tokio::time::timeout(Duration::from_secs(60), async {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("the server closes the connection");
        let response = String::from_utf8_lossy(&out);
        let (got, head, _) = parse_response(&response);
        assert_eq!(got, status, "{}", &response[..response.len().min(300)]);
        assert!(head.contains("content-length: 0"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
    }
    assert_eq!(app.probe("/health").await, 200);
}

async fn many_idle_connections_do_not_block_service(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(TcpStream::connect(("127.0.0.1", app.port)).await.unwrap());
    }
    let token = app.token("alice");
    assert_eq!(app.list(&token, "").await.status(), 200);
    drop(idle);
}

on_both_backends!(
    per_user_rate_limit_is_429_with_retry_after,
    rate_limiter_over_its_user_cap_keeps_working,
    deeply_nested_json_is_400,
    oversized_headers_are_rejected,
    slow_clients_are_cut_off,
    many_idle_connections_do_not_block_service,
    stalled_request_bodies_get_408_and_are_disconnected,
    truncated_bodies_are_400_without_debug_text,
    unread_stalled_bodies_do_not_hold_connections,
    protocol_errors_are_as_documented,
);
