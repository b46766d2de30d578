//! Logging set-up. Log lines carry the request id of the request they belong
//! to (through the `request` span); tokens, secrets and task text are never
//! recorded anywhere in this service.
//!
//! Driver crates are held at `info` whatever the filter says: their debug
//! lines print SQL statement parameters (Better Auth session tokens are one)
//! and request details. `LOG_DRIVER_DEBUG=true` lifts the clamp for local
//! debugging; production mode refuses it.
//!
//! Traces (opt-in, `OTEL_EXPORTER_OTLP_ENDPOINT`): the `request` span of
//! each request and the store's `db.*` spans inside it are exported over
//! OTLP HTTP/protobuf by `tracing-opentelemetry`, and nothing else: no log
//! event, no driver span. Their fields are the ones the logs carry (request
//! id, method, route pattern; backend, task ids, filters), plus the
//! response status; never a header, a token or task text.

use std::io::IsTerminal as _;

use tracing::Metadata;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt as _, LevelFilter, filter_fn};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::settings::{LogFormat, Traces};

/// Crates whose debug and trace output may carry credentials.
pub const DRIVER_CRATES: &[&str] = &[
    "tokio_postgres",
    "tokio_postgres_rustls",
    "postgres_protocol",
    "diesel",
    "diesel_async",
    "diesel_migrations",
    "deadpool",
    "reqwest",
    "hyper",
    "hyper_util",
    "rustls",
    "h2",
];

/// Whether an event or span of `target` belongs to a driver crate.
fn is_driver(target: &str) -> bool {
    DRIVER_CRATES.iter().any(|c| {
        target
            .strip_prefix(c)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Whether `meta` passes the driver clamp: anything that is not a driver
/// crate, and driver crates at `info` or above.
#[must_use]
pub fn driver_clamp(meta: &Metadata<'_>) -> bool {
    *meta.level() <= tracing::Level::INFO || !is_driver(meta.target())
}

/// Installs the global subscriber. Call once, from `main`. `driver_debug`
/// is `LOG_DRIVER_DEBUG`.
///
/// # Errors
/// The filter is invalid or a subscriber was already installed.
pub fn init(format: LogFormat, filter: &str, driver_debug: bool) -> anyhow::Result<()> {
    init_with_traces(format, filter, driver_debug, None).map(drop)
}

/// [`init`], plus the OTLP trace export when `traces` is set. Keep the
/// returned guard until the end: dropping it exports what is still queued.
///
/// # Errors
/// As [`init`], or the exporter cannot be built.
pub fn init_with_traces(
    format: LogFormat,
    filter: &str,
    driver_debug: bool,
    traces: Option<&Traces>,
) -> anyhow::Result<Option<TracesGuard>> {
    let (otel, guard) = match traces {
        Some(t) => {
            let (layer, guard) = traces_layer(t)?;
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    // Each `filter_fn` says it never raises the level (`TRACE` is no limit),
    // so the combined filter keeps `EnvFilter`'s hint: without one the
    // global maximum is `TRACE`, and every disabled `debug!` callsite, span
    // and `log` record of a driver is checked at run time on every request
    // (about 6% of the CPU of a `GET /api/tasks/{id}`, callgrind).
    let events = fmt_layer(format, FmtSpan::NONE).with_filter(
        EnvFilter::try_new(filter)?.and(
            filter_fn(move |meta| driver_debug || driver_clamp(meta))
                .with_max_level_hint(LevelFilter::TRACE),
        ),
    );
    // Database time apart from handler time: one line when each `db.*` span
    // of the store closes (`time.busy` + `time.idle` is the query's wall
    // time; awaiting the database counts as idle). Those spans are at
    // `debug`, so this prints only with e.g. `LOG_LEVEL=info,tasks_store=debug`.
    let queries = fmt_layer(format, FmtSpan::CLOSE).with_filter(
        EnvFilter::try_new(filter)?.and(
            filter_fn(|meta| meta.is_span() && is_store(meta.target()))
                .with_max_level_hint(LevelFilter::TRACE),
        ),
    );
    tracing_subscriber::registry()
        .with(events)
        .with(queries)
        .with(otel)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    if let Some(t) = traces {
        tracing::info!(endpoint = %tasks_store::redact_url(&t.endpoint), "exporting traces over OTLP");
    }
    Ok(guard)
}

/// Owns the trace pipeline; dropping it exports the queued spans and stops
/// the exporter's thread.
pub struct TracesGuard {
    provider: SdkTracerProvider,
}

impl TracesGuard {
    /// Exports every finished span now (tests, shutdown).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "could not export traces");
        }
    }
}

impl Drop for TracesGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// The layer that exports the `request` and `db.*` spans to `traces`, with
/// the batch exporter behind it. The service name is `tasks-server` unless
/// `OTEL_SERVICE_NAME` (or `OTEL_RESOURCE_ATTRIBUTES`) says otherwise.
///
/// # Errors
/// The exporter cannot be built.
pub fn traces_layer<S>(
    traces: &Traces,
) -> anyhow::Result<(
    Box<dyn tracing_subscriber::Layer<S> + Send + Sync>,
    TracesGuard,
)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces.endpoint.clone())
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| anyhow::anyhow!("building the OTLP trace exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("tasks-server");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("tasks-server"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(is_traced))
        .boxed();
    Ok((layer, TracesGuard { provider }))
}

/// The spans that are exported: each request's, and the store's queries.
fn is_traced(meta: &Metadata<'_>) -> bool {
    meta.is_span()
        && ((meta.name() == "request" && meta.target() == "tasks_server::middleware")
            || (meta.name().starts_with("db.") && is_store(meta.target())))
}

fn is_store(target: &str) -> bool {
    target
        .strip_prefix("tasks_store")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

fn fmt_layer<S>(
    format: LogFormat,
    span_events: FmtSpan,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let layer = fmt::layer()
        .with_writer(std::io::stdout)
        .with_span_events(span_events)
        .with_target(false);
    match format {
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Compact => layer
            .compact()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_targets_are_recognised_by_crate_prefix() {
        for t in [
            "tokio_postgres",
            "tokio_postgres::query",
            "tokio_postgres::prepare",
            "hyper_util::client::legacy::pool",
            "reqwest::connect",
            "rustls::client::hs",
            "diesel_async::pg",
            "h2::codec",
        ] {
            assert!(is_driver(t), "{t}");
        }
        for t in [
            "tasks_server",
            "tasks_auth::session",
            "tokio_postgresql",
            "hyperx",
            "h2o",
        ] {
            assert!(!is_driver(t), "{t}");
        }
    }
}
