//! Prometheus metrics: the process-wide recorder and the `/metrics` listener.
//!
//! Numbers are recorded through the `metrics` facade wherever they arise (the
//! request middleware here, `tasks-store` for queries, `tasks-auth` for token
//! checks, the rate limiter), and rendered by `metrics-exporter-prometheus`.
//! Until [`install`] runs (no `METRICS_PORT`), every recording call is a
//! no-op against the facade's empty recorder.
//!
//! `/metrics` has a listener of its own (`METRICS_PORT`, on `METRICS_HOST`,
//! loopback by default), never the API's port: the API port is the one a
//! load balancer publishes, so a separate port cannot reach the internet by
//! accident, needs no rule to hide it from the bearer-token check, stays out
//! of the OpenAPI contract and out of the request metrics themselves, and a
//! scraper is never queued behind API traffic.
//!
//! Labels are bounded by construction: route *patterns* (`/api/tasks/{id}`,
//! or `unmatched`), a fixed set of methods, status classes, operation and
//! verifier names. No user id, task id or raw path is ever a label.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::{Method, StatusCode};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use metrics::{Counter, Histogram, Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tasks_store::DieselTaskStore;

/// Histogram buckets, in seconds, for request and query latencies: from
/// half a millisecond (a cached SQLite read) to ten seconds (timeouts).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded in when nobody scrapes, so that
/// an unscraped process does not accumulate them.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The route label of a request no route matched (404s, scanners).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Installs the Prometheus recorder, once per process, and returns a handle
/// to render it. The `metrics` facade is process-wide by design (like the
/// log subscriber): a second application in the same process (tests) shares
/// the first one's recorder.
///
/// # Errors
/// Another recorder was installed by someone else.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .context("configuring the metrics histograms")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        })
        .context("starting the metrics upkeep thread")?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

fn describe() {
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by route pattern, method and status class"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time from request head to response, by route pattern, method and status class"
    );
    describe_histogram!(
        "db_query_duration_seconds",
        Unit::Seconds,
        "Wall time of one repository call (pool wait included), by operation and backend"
    );
    describe_counter!(
        "db_query_timeouts_total",
        "Queries stopped by DATABASE_QUERY_TIMEOUT, by backend"
    );
    describe_gauge!(
        "db_pool_connections",
        "Connections of the task database pool, by state (idle, in_use)"
    );
    describe_gauge!("db_pool_max_connections", "DATABASE_POOL_SIZE");
    describe_gauge!(
        "db_pool_waiting",
        "Requests waiting for a connection of the task database pool"
    );
    describe_counter!(
        "auth_verifications_total",
        "Bearer tokens checked by a verifier (cache hits excluded), by verifier and outcome"
    );
    describe_counter!(
        "auth_token_cache_total",
        "Lookups in the verified-token cache, by result (hit, miss)"
    );
    describe_counter!(
        "auth_jwks_refreshes_total",
        "JWKS fetches, by outcome (ok, error)"
    );
    describe_gauge!(
        "sse_open_streams",
        "Open GET /api/tasks/events streams on this instance (capped by SSE_MAX_STREAMS)"
    );
    describe_gauge!(
        "sse_listener_connected",
        "1 while the PostgreSQL change listener (DATABASE_DIRECT_URL) is connected and listening"
    );
    describe_counter!(
        "sse_listener_reconnects_total",
        "Times the PostgreSQL change listener lost its connection or failed to connect"
    );
    describe_counter!(
        "rate_limit_rejections_total",
        "Requests refused with 429 by the per-user rate limit, by limiter (local, redis)"
    );
}

/// Most series of request metrics a worker thread keeps handles for; past
/// it (which bounded labels cannot reach) handles are looked up each time.
const MAX_CACHED_SERIES: usize = 1024;

/// Route pattern -> (method, status class) -> handles.
type SeriesCache = HashMap<String, HashMap<(&'static str, &'static str), (Counter, Histogram)>>;

thread_local! {
    /// Handles of the request series this worker thread has recorded, so a
    /// request costs two small map lookups instead of a registry lookup with
    /// label allocations. Valid for the life of the process: the recorder is
    /// installed once, before the API's workers start.
    static REQUEST_SERIES: RefCell<(SeriesCache, usize)> = RefCell::new((HashMap::new(), 0));
}

/// Records one answered request. `route` is the matched pattern.
pub fn record_request(method: &Method, route: Option<&str>, status: StatusCode, took: Duration) {
    let method = method_label(method);
    let status = match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    let route = route.unwrap_or(UNMATCHED_ROUTE);
    let record = |(counter, histogram): &(Counter, Histogram)| {
        counter.increment(1);
        histogram.record(took.as_secs_f64());
    };
    REQUEST_SERIES.with_borrow_mut(|(cache, cached)| {
        if let Some(handles) = cache.get(route).and_then(|m| m.get(&(method, status))) {
            record(handles);
            return;
        }
        let labels = [
            ("route", route.to_owned()),
            ("method", method.to_owned()),
            ("status", status.to_owned()),
        ];
        let handles = (
            metrics::counter!("http_requests_total", &labels),
            metrics::histogram!("http_request_duration_seconds", &labels),
        );
        record(&handles);
        if *cached < MAX_CACHED_SERIES {
            *cached += 1;
            cache
                .entry(route.to_owned())
                .or_default()
                .insert((method, status), handles);
        }
    });
}

/// A bounded name for `method`: the methods the API knows, else `other`.
#[must_use]
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// Records a request refused by the rate limit; `limiter` is `local` or `redis`.
pub fn record_rate_limited(limiter: &'static str) {
    metrics::counter!("rate_limit_rejections_total", "limiter" => limiter).increment(1);
}

/// The pool gauges, sampled when scraped.
fn record_pool(store: &DieselTaskStore) {
    let stats = store.pool_stats();
    let backend = store.backend_name();
    let gauge = |value: usize| value as f64;
    metrics::gauge!("db_pool_connections", "backend" => backend, "state" => "in_use")
        .set(gauge(stats.in_use));
    metrics::gauge!("db_pool_connections", "backend" => backend, "state" => "idle")
        .set(gauge(stats.size.saturating_sub(stats.in_use)));
    metrics::gauge!("db_pool_max_connections", "backend" => backend).set(gauge(stats.max_size));
    metrics::gauge!("db_pool_waiting", "backend" => backend).set(gauge(stats.waiting));
}

struct Scrape {
    handle: PrometheusHandle,
    store: Arc<DieselTaskStore>,
}

async fn scrape(state: web::Data<Scrape>) -> HttpResponse {
    record_pool(&state.store);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.handle.render())
}

/// The `/metrics` server on `listener`: one worker, no signal handling of
/// its own (the application stops it with the API server).
///
/// # Errors
/// The listener cannot be used.
pub fn server(
    listener: TcpListener,
    handle: PrometheusHandle,
    store: Arc<DieselTaskStore>,
) -> anyhow::Result<Server> {
    let state = web::Data::new(Scrape { handle, store });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/metrics", web::get().to(scrape))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .context("serving /metrics")?
    .run())
}
