//! Errors outside the handlers still get the envelope; every response gets
//! the request id and the security headers.

use reqwest::Method;

use crate::helpers::{Backend, TestApp, assert_error};
use crate::on_both_backends;
use tasks_server::middleware::{API_CSP, DOCS_CSP};

async fn unknown_routes_and_methods_get_the_envelope(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    for path in [
        "/nope",
        "/api",
        "/api/task",
        "/api/tasks/1/2",
        "/api/tasks/1/completed",
    ] {
        let res = app.request(Method::GET, path, Some(&token), None).await;
        assert_error(res, 404, "not_found").await;
    }
    for (method, path) in [
        (Method::DELETE, "/api/tasks"),
        (Method::PUT, "/api/tasks"),
        (Method::PATCH, "/api/tasks"),
        (Method::POST, "/api/tasks/1"),
        (Method::POST, "/api/alice/tasks/1"),
        (Method::GET, "/api/tasks/1/complete"),
        (Method::POST, "/health"),
    ] {
        let res = app.request(method, path, Some(&token), None).await;
        assert_error(res, 405, "method_not_allowed").await;
    }
}

async fn responses_carry_request_id_and_safety_headers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    for res in [
        app.list(&token, "").await,
        app.get(&token, 1).await,
        app.request(Method::GET, "/nope", None, None).await,
    ] {
        let h = res.headers();
        let id = h.get("x-request-id").unwrap().to_str().unwrap();
        assert!(id.len() >= 16);
        assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(h.get("cache-control").unwrap(), "no-store");
    }
    // A sane incoming request id is kept, a hostile one replaced.
    let res = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers().get("x-request-id").unwrap(), "trace-abc-123");
    let res = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "evil\"value<script>")
        .send()
        .await
        .unwrap();
    assert_ne!(
        res.headers().get("x-request-id").unwrap(),
        "evil\"value<script>"
    );
}

on_both_backends!(
    unknown_routes_and_methods_get_the_envelope,
    responses_carry_request_id_and_safety_headers
);

/// `/docs` in both modes: a CSP that allows only this origin's vendored files,
/// no framing; production never persists a pasted token in the browser.
async fn docs_are_locked_down(app_env: &str, persists: bool) {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("APP_ENV", app_env)]).await;
    for path in [
        "/docs/",
        "/docs/swagger-initializer.js",
        "/docs/swagger-ui-bundle.js",
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers();
        assert_eq!(h.get("x-frame-options").unwrap(), "DENY", "{path}");
        let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
        assert_eq!(csp, DOCS_CSP, "{path}");
    }
    for directive in [
        "default-src 'none'",
        "script-src 'self';",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(DOCS_CSP.contains(directive), "{directive}");
    }
    assert!(!DOCS_CSP.contains("unsafe-inline") && !DOCS_CSP.contains("unsafe-eval"));
    let init = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        init.contains(&format!("\"persistAuthorization\": {persists}")),
        "{init}"
    );
    // Everything else is JSON: nothing may load, nobody may frame it.
    let token = app.token("alice");
    for res in [
        app.list(&token, "").await,
        app.request(Method::GET, "/nope", None, None).await,
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    ] {
        let h = res.headers();
        assert_eq!(h.get("x-frame-options").unwrap(), "DENY");
        assert_eq!(h.get("content-security-policy").unwrap(), API_CSP);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_are_locked_down_in_production() {
    docs_are_locked_down("production", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_are_locked_down_in_development_and_keep_the_token() {
    docs_are_locked_down("development", true).await;
}
