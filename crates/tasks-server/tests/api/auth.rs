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
        ("blank sub", sign(&json!({"sub": "   ", "exp": t + 600}))),
        (
            "white-space sub",
            sign(&json!({"sub": "\u{a0}\u{3000}\u{2003}", "exp": t + 600})),
        ),
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

async fn configured_issuer_and_audience_are_required(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("JWT_ISSUER", "https://auth.example"),
            ("JWT_AUDIENCE", "tasks-api"),
        ],
    )
    .await;
    let t = now();
    for claims in [
        json!({"sub": "alice", "exp": t + 600}),
        json!({"sub": "alice", "exp": t + 600, "iss": "https://auth.example"}),
        json!({"sub": "alice", "exp": t + 600, "aud": "tasks-api"}),
    ] {
        let token = sign(&claims);
        let body = expect_401(&app, "GET", "/api/tasks", Some(&format!("Bearer {token}"))).await;
        assert!(
            body["detail"].as_str().unwrap().contains("token has no"),
            "{body}"
        );
    }
    let both = sign(&json!({
        "sub": "alice", "exp": t + 600, "iss": "https://auth.example", "aud": "tasks-api"
    }));
    assert_eq!(app.list(&both, "").await.status(), 200);
}

const BETTER_AUTH_SECRET: &str = "better-auth-secret-reused-as-an-hs256-key";

async fn better_auth_secret_does_not_bypass_sessions_or_jwks(backend: Backend) {
    let token = sign_with(
        &json!({"sub": "alice", "exp": now() + 7 * 86_400}),
        Algorithm::HS256,
        BETTER_AUTH_SECRET.as_bytes(),
    );
    // Better Auth's database: its tables must exist, or start-up stops.
    let (_ba_db, sessions, _client) =
        crate::helpers::auth_database(Backend::Postgres, crate::helpers::BETTER_AUTH_SCHEMA).await;
    for mode in [
        ("BETTER_AUTH_DATABASE_URL", sessions.as_str()),
        ("BETTER_AUTH_URL", "http://127.0.0.1:9"),
    ] {
        let base = [
            ("JWT_SECRET", ""),
            ("BETTER_AUTH_SECRET", BETTER_AUTH_SECRET),
            mode,
        ];
        let app = TestApp::spawn_with(backend, &base).await;
        let body = expect_401(&app, "GET", "/api/tasks", Some(&format!("Bearer {token}"))).await;
        // The detail names the two ways to accept it.
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("HS")
                && detail.contains("JWT_SECRET")
                && detail.contains("JWT_ACCEPT_BETTER_AUTH_SECRET=true")
                && !detail.contains(BETTER_AUTH_SECRET),
            "{mode:?}: {body}"
        );
        // The explicit opt-in brings it back.
        let mut opted_in = base.to_vec();
        opted_in.push(("JWT_ACCEPT_BETTER_AUTH_SECRET", "true"));
        let app = TestApp::spawn_with(backend, &opted_in).await;
        assert_eq!(app.list(&token, "").await.status(), 200, "{mode:?}");
    }
    // The plain shared-secret set-up keeps accepting it.
    let app = TestApp::spawn_with(
        backend,
        &[
            ("JWT_SECRET", ""),
            ("BETTER_AUTH_SECRET", BETTER_AUTH_SECRET),
        ],
    )
    .await;
    assert_eq!(app.list(&token, "").await.status(), 200);
}

async fn maximum_token_age_is_enforced(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("JWT_MAX_AGE", "3600")]).await;
    let t = now();
    let old = sign(&json!({"sub": "alice", "iat": t - 7200, "exp": t + 86_400}));
    let body = expect_401(&app, "GET", "/api/tasks", Some(&format!("Bearer {old}"))).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("maximum token age"),
        "{body}"
    );
    let no_iat = sign(&json!({"sub": "alice", "exp": t + 600}));
    expect_401(&app, "GET", "/api/tasks", Some(&format!("Bearer {no_iat}"))).await;
    let fresh = sign(&json!({"sub": "alice", "iat": t, "exp": t + 86_400}));
    assert_eq!(app.list(&fresh, "").await.status(), 200);
}

/// What a frontend developer sees for a wrong issuer and an unreachable
/// JWKS: enough to fix the set-up, nothing secret.
async fn misconfiguration_errors_name_the_fix(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("JWT_ISSUER", "https://auth.example")]).await;
    let t = now();
    let wrong = sign(&json!({"sub": "alice", "iss": "http://127.0.0.1:3000", "exp": t + 600}));
    let body = expect_401(&app, "GET", "/api/tasks", Some(&format!("Bearer {wrong}"))).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(r#"expected "https://auth.example""#) && detail.contains("JWT_ISSUER"),
        "{body}"
    );
    // Better Auth (JWKS) unreachable: still 503, saying what failed, with the
    // URL's password and query string redacted.
    let port = crate::helpers::free_port();
    let jwks = format!("http://keys:hunter2-pass@127.0.0.1:{port}/api/auth/jwks?key=query-secret");
    let app = TestApp::spawn_with(
        backend,
        &[
            ("JWT_SECRET", ""),
            ("BETTER_AUTH_URL", "http://127.0.0.1:3000"),
            ("JWKS_URL", &jwks),
        ],
    )
    .await;
    let eddsa = format!(
        "{}.{}.{}",
        b64_json(&json!({"alg": "EdDSA", "kid": "k1"})),
        b64_json(&json!({"sub": "alice", "exp": t + 600})),
        crate::helpers::b64(&[7; 64])
    );
    let res = app.list(&eddsa, "").await;
    assert!(res.headers().contains_key("retry-after"));
    let body = assert_error(res, 503, "service_unavailable").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("signing keys could not be fetched")
            && detail.contains(&format!("127.0.0.1:{port}")),
        "{body}"
    );
    for secret in ["hunter2-pass", "query-secret"] {
        assert!(!detail.contains(secret), "{body}");
    }
}

on_both_backends!(
    misconfiguration_errors_name_the_fix,
    every_endpoint_requires_a_token,
    bad_tokens_are_rejected,
    tampered_payload_is_rejected,
    configured_issuer_and_audience_are_required,
    better_auth_secret_does_not_bypass_sessions_or_jwks,
    maximum_token_age_is_enforced
);
