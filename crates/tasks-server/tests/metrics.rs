//! `/metrics`: served on its own listener only when `METRICS_PORT` is set,
//! in the Prometheus text format (read here with a Prometheus parser), with
//! bounded label sets.
//!
//! A test binary of its own: the metrics recorder is process-wide, so the
//! numbers here come only from the apps these tests start.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, with the message"
)]

#[path = "api/helpers.rs"]
mod helpers;

use std::collections::{BTreeSet, HashMap};

use futures_util::StreamExt as _;
use helpers::{Backend, TestApp};
use openmetrics_parser::PrometheusValue;
use openmetrics_parser::prometheus::parse_prometheus;
use reqwest::Method;
use serde_json::json;

/// Every label name a metric of this service may carry; `le` is the
/// histogram buckets'. A new one must be added here on purpose.
const LABEL_NAMES: &[&str] = &[
    "route",
    "method",
    "status",
    "operation",
    "backend",
    "state",
    "verifier",
    "outcome",
    "result",
    "limiter",
    "le",
];

/// One parsed series: its family's name, labels, and value (a histogram's
/// observation count).
struct Series {
    metric: String,
    labels: HashMap<String, String>,
    value: f64,
}

async fn scrape(app: &TestApp) -> Vec<Series> {
    let port = app.metrics_port.expect("METRICS_PORT was set");
    let res = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = res.text().await.unwrap();
    let exposition = parse_prometheus(&text).expect("Prometheus text format");
    let mut series = Vec::new();
    for family in exposition.families.values() {
        for sample in family.iter_samples() {
            let labels = sample
                .get_labelset()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let value = match &sample.value {
                PrometheusValue::Counter(c) => c.value.as_f64(),
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
                PrometheusValue::Histogram(h) => h.count.unwrap_or(0) as f64,
                PrometheusValue::Summary(s) => s.count.unwrap_or(0) as f64,
            };
            series.push(Series {
                metric: family.family_name.clone(),
                labels,
                value,
            });
        }
    }
    series
}

fn samples<'a>(scrape: &'a [Series], metric: &str, labels: &[(&str, &str)]) -> Vec<&'a Series> {
    scrape
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn count(scrape: &[Series], metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples(scrape, metric, labels)
        .iter()
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_few_requests_have_bounded_labels() {
    let app = TestApp::spawn_with(
        Backend::Postgres,
        &[
            ("METRICS_PORT", "0"),
            ("RATE_LIMIT_PER_MINUTE", "60"),
            ("RATE_LIMIT_BURST", "8"),
        ],
    )
    .await;
    let user = "metrics-user-7f3a";
    let token = app.token(user);
    // One live-update stream, open while the metrics are scraped.
    let stream = reqwest::Client::new()
        .get(app.url("/api/tasks/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut stream = stream.bytes_stream();
    let task = app.create_ok(&token, "a secret title").await;
    let id = task["id"].as_i64().unwrap();
    assert_eq!(app.get(&token, id).await.status(), 200);
    assert_eq!(app.get(&token, id).await.status(), 200, "a cache hit");
    assert_eq!(app.list(&token, "").await.status(), 200);
    let updated = app
        .update(&token, id, &json!({"title": "another title"}))
        .await;
    assert_eq!(updated.status(), 200);
    let by_user = app
        .request(
            Method::GET,
            &format!("/api/{user}/tasks"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(by_user.status(), 200);
    let unmatched = app
        .request(Method::GET, &format!("/no/such/{user}/{id}"), None, None)
        .await;
    assert_eq!(unmatched.status(), 404);
    let bad = app.list("not-a-token", "").await;
    assert_eq!(bad.status(), 401);
    // Past the burst of 8: at least one 429.
    let mut limited = 0;
    for _ in 0..4 {
        if app.list(&token, "").await.status() == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0, "the rate limit never applied");

    // The stream saw the update: the PostgreSQL listener is connected (a
    // change arrives only through it, or its reconcile after connecting).
    let mut seen = String::new();
    while !seen.contains("another title") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
            .await
            .expect("the update reaches the stream")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }

    let scrape = scrape(&app).await;
    assert_eq!(count(&scrape, "sse_open_streams", &[]), 1.0);
    assert_eq!(count(&scrape, "sse_listener_connected", &[]), 1.0);

    // Requests by route pattern, method and status class, with histograms.
    let created = [
        ("route", "/api/tasks"),
        ("method", "POST"),
        ("status", "2xx"),
    ];
    assert!(count(&scrape, "http_requests_total", &created) >= 1.0);
    assert!(count(&scrape, "http_request_duration_seconds", &created) >= 1.0);
    let got = [
        ("route", "/api/tasks/{id}"),
        ("method", "GET"),
        ("status", "2xx"),
    ];
    assert!(count(&scrape, "http_requests_total", &got) >= 2.0);
    let aliased = [("route", "/api/{user_id}/tasks"), ("status", "2xx")];
    assert!(count(&scrape, "http_requests_total", &aliased) >= 1.0);
    let unmatched = [("route", "unmatched"), ("status", "4xx")];
    assert!(count(&scrape, "http_requests_total", &unmatched) >= 1.0);
    let limited_requests = [("route", "/api/tasks"), ("status", "4xx")];
    assert!(count(&scrape, "http_requests_total", &limited_requests) >= 2.0);

    // Database query latency by operation and backend; the pool.
    for op in ["create", "get", "list", "update"] {
        let labels = [("operation", op), ("backend", "postgres")];
        assert!(
            count(&scrape, "db_query_duration_seconds", &labels) >= 1.0,
            "no db_query_duration_seconds for {op}"
        );
    }
    assert_eq!(
        samples(&scrape, "db_pool_connections", &[("backend", "postgres")]).len(),
        2,
        "idle and in_use"
    );
    let postgres = [("backend", "postgres")];
    assert!(count(&scrape, "db_pool_max_connections", &postgres) >= 1.0);
    assert_eq!(samples(&scrape, "db_pool_waiting", &postgres).len(), 1);

    // Token verification by verifier and outcome; the cache.
    let ok = [("verifier", "hs256"), ("outcome", "ok")];
    assert!(count(&scrape, "auth_verifications_total", &ok) >= 1.0);
    let rejected = [("outcome", "rejected")];
    assert!(count(&scrape, "auth_verifications_total", &rejected) >= 1.0);
    assert!(count(&scrape, "auth_token_cache_total", &[("result", "hit")]) >= 1.0);
    assert!(count(&scrape, "auth_token_cache_total", &[("result", "miss")]) >= 1.0);

    // Rate-limit rejections.
    let local = [("limiter", "local")];
    assert!(count(&scrape, "rate_limit_rejections_total", &local) >= f64::from(limited));

    // Bounded label sets: known names only, and no user id, task id or
    // task text anywhere in a value.
    let mut names = BTreeSet::new();
    for sample in &scrape {
        for (name, value) in &sample.labels {
            names.insert(name.clone());
            assert!(
                !value.contains(user) && !value.contains("secret") && value != &id.to_string(),
                "{}{{{name}={value:?}}} is unbounded",
                sample.metric
            );
            assert!(
                !value.contains(&format!("/{id}")),
                "{}: a raw path in {value:?}",
                sample.metric
            );
        }
    }
    let unknown: Vec<_> = names
        .iter()
        .filter(|n| !LABEL_NAMES.contains(&n.as_str()))
        .collect();
    assert!(unknown.is_empty(), "unexpected label names {unknown:?}");
    let routes: BTreeSet<_> = samples(&scrape, "http_requests_total", &[])
        .iter()
        .map(|s| s.labels.get("route").cloned().unwrap_or_default())
        .collect();
    for route in &routes {
        assert!(
            route == "unmatched" || route.starts_with('/'),
            "route label {route:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_off_by_default_and_never_on_the_api_port() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    assert_eq!(app.metrics_port, None, "no listener without METRICS_PORT");
    let res = app.request(Method::GET, "/metrics", None, None).await;
    assert_eq!(res.status(), 404);

    let app = TestApp::spawn_with(Backend::Sqlite, &[("METRICS_PORT", "0")]).await;
    let res = app.request(Method::GET, "/metrics", None, None).await;
    assert_eq!(res.status(), 404, "the API port never serves /metrics");
    let scrape = scrape(&app).await;
    assert!(!scrape.is_empty());
    // The listener is loopback-only by default.
    assert!(std::net::TcpStream::connect(("127.0.0.1", app.metrics_port.unwrap())).is_ok());
}
