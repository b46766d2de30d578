//! CORS for the Next.js frontend: allowed origins get credentials and the
//! Authorization header; others are never echoed.

use reqwest::Method;

use crate::helpers::{Backend, ENDPOINTS, TestApp};
use crate::on_both_backends;

const ALLOWED: &str = "http://localhost:3000";

async fn preflight_is_answered_for_all_six_operations(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (method, path) in ENDPOINTS {
        for origin in [ALLOWED, "https://app.example.com"] {
            let res = app
                .client
                .request(Method::OPTIONS, app.url(path))
                .header("origin", origin)
                .header("access-control-request-method", method)
                .header(
                    "access-control-request-headers",
                    "authorization,content-type",
                )
                .send()
                .await
                .unwrap();
            assert!(
                res.status().is_success(),
                "{method} {path}: {}",
                res.status()
            );
            let h = res.headers();
            assert_eq!(h.get("access-control-allow-origin").unwrap(), origin);
            assert_eq!(h.get("access-control-allow-credentials").unwrap(), "true");
            let methods = h
                .get("access-control-allow-methods")
                .unwrap()
                .to_str()
                .unwrap();
            assert!(methods.contains(method), "{methods}");
            let headers = h
                .get("access-control-allow-headers")
                .unwrap()
                .to_str()
                .unwrap()
                .to_ascii_lowercase();
            assert!(
                headers.contains("authorization") && headers.contains("content-type"),
                "{headers}"
            );
        }
    }
}

async fn disallowed_origins_are_never_echoed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    for origin in [
        "https://evil.example",
        "http://localhost:3001",
        "null",
        "http://localhost:3000.evil.example",
    ] {
        let pre = app
            .client
            .request(Method::OPTIONS, app.url("/api/tasks"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        assert!(
            pre.headers().get("access-control-allow-origin").is_none(),
            "{origin}"
        );
        let res = app
            .client
            .get(app.url("/api/tasks"))
            .bearer_auth(&token)
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert!(
            res.headers().get("access-control-allow-origin").is_none(),
            "{origin}"
        );
    }
    let res = app
        .client
        .get(app.url("/api/tasks"))
        .bearer_auth(&token)
        .header("origin", ALLOWED)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("access-control-allow-origin").unwrap(),
        ALLOWED
    );
}

on_both_backends!(
    preflight_is_answered_for_all_six_operations,
    disallowed_origins_are_never_echoed
);
