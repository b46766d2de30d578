//! Bearer tokens: every way a token can be wrong is a 401 with the envelope
//! and a `WWW-Authenticate: Bearer` challenge, on every endpoint.

use jsonwebtoken::Algorithm;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, ENDPOINTS, TestApp, assert_error, b64_json, now, sign, sign_with};
use crate::on_both_backends;

async fn expect_401(app: &TestApp, method: &str, path: &str, authorization: Option<&str>) -> Value {
    let mut req = app
        .client
        .request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            app.url(path),
        )
        .json(&json!({"title": "x"}));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let res = req.send().await.unwrap();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "{method} {path}: challenge {challenge:?}"
    );
    assert_error(res, 401, "authentication_error").await
}

async fn every_endpoint_requires_a_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (method, path) in ENDPOINTS {
        expect_401(&app, method, path, None).await;
        expect_401(&app, method, path, Some("")).await;
        expect_401(&app, method, path, Some("Bearer")).await;
        expect_401(&app, method, path, Some("Bearer    ")).await;
        expect_401(&app, method, path, Some("Basic YWxpY2U6c2VjcmV0")).await;
        expect_401(&app, method, path, Some("Bearer not-a-jwt")).await;
    }
    // Nothing was created by the unauthenticated POSTs.
    let token = app.token("alice");
    assert!(app.list_ok(&token).await.is_empty());
}

async fn bad_tokens_are_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = now();
    let cases: Vec<(&str, String)> = vec![
        (
            "expired beyond leeway",
            sign(&json!({"sub": "alice", "exp": t - 120})),
        ),
        ("no exp", sign(&json!({"sub": "alice"}))),
        ("no sub", sign(&json!({"exp": t + 600}))),
        ("empty sub", sign(&json!({"sub": "", "exp": t + 600}))),
        ("numeric sub", sign(&json!({"sub": 42, "exp": t + 600}))),
        (
            "object sub",
            sign(&json!({"sub": {"id": "alice"}, "exp": t + 600})),
        ),
        (
            "wrong secret",
            sign_with(
                &json!({"sub": "alice", "exp": t + 600}),
                Algorithm::HS256,
                b"some-other-secret-entirely-123456",
            ),
        ),
        (
            "HS512",
            sign_with(
                &json!({"sub": "alice", "exp": t + 600}),
                Algorithm::HS512,
                crate::helpers::SECRET.as_bytes(),
            ),
        ),
        (
            "not yet valid",
            sign(&json!({"sub": "alice", "exp": t + 600, "nbf": t + 300})),
        ),
        // {"alg":"none"} with a valid-looking payload and no signature.
        (
            "alg none",
            format!(
                "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
                b64_json(&json!({"sub": "alice", "exp": t + 600}))
            ),
        ),
        (
            "truncated",
            sign(&json!({"sub": "alice", "exp": t + 600}))
                .rsplit_once('.')
                .unwrap()
                .0
                .to_owned(),
        ),
        (
            "oversized",
            sign(&json!({"sub": "alice", "exp": t + 600, "pad": "x".repeat(9000)})),
        ),
    ];
    for (what, token) in cases {
        let body = expect_401(&app, "GET", "/api/tasks", Some(&format!("Bearer {token}"))).await;
        let detail = body["detail"].as_str().unwrap();
        assert!(!detail.contains(&token), "{what}: the token is echoed");
    }
    // Within the 60 s leeway an expired token still works; the scheme is case-insensitive.
    let recent = sign(&json!({"sub": "alice", "exp": t - 20}));
    let res = app.list(&recent, "").await;
    assert_eq!(res.status(), 200);
    let res = app
        .client
        .get(app.url("/api/tasks"))
        .header("authorization", format!("bearer {recent}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn tampered_payload_is_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = b64_json(&json!({"sub": "mallory", "exp": now() + 600}));
    let forged = parts.join(".");
    expect_401(&app, "GET", "/api/tasks", Some(&format!("Bearer {forged}"))).await;
}

on_both_backends!(
    every_endpoint_requires_a_token,
    bad_tokens_are_rejected,
    tampered_payload_is_rejected
);
