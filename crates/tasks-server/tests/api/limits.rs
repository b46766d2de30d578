//! Limits with clear errors: rate limit, nesting, header size, slow clients,
//! idle connections.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp, assert_error};
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
    assert_eq!(
        app.client
            .get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
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
    deeply_nested_json_is_400,
    oversized_headers_are_rejected,
    slow_clients_are_cut_off,
    many_idle_connections_do_not_block_service,
);
