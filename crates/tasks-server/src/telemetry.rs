//! Logging set-up. Log lines carry the request id of the request they belong
//! to (through the `request` span); tokens, secrets and task text are never
//! recorded anywhere in this service.
//!
//! Driver crates are held at `info` whatever the filter says: their debug
//! lines print SQL statement parameters (Better Auth session tokens are one)
//! and request details. `LOG_DRIVER_DEBUG=true` lifts the clamp for local
//! debugging; production mode refuses it.

use std::io::IsTerminal as _;

use tracing::Metadata;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

use crate::settings::LogFormat;

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
    let events = fmt_layer(format, FmtSpan::NONE).with_filter(
        EnvFilter::try_new(filter)?.and(filter_fn(move |meta| driver_debug || driver_clamp(meta))),
    );
    // Database time apart from handler time: one line when each `db.*` span
    // of the store closes (`time.busy` + `time.idle` is the query's wall
    // time; awaiting the database counts as idle). Those spans are at
    // `debug`, so this prints only with e.g. `LOG_LEVEL=info,tasks_store=debug`.
    let queries = fmt_layer(format, FmtSpan::CLOSE).with_filter(
        EnvFilter::try_new(filter)?
            .and(filter_fn(|meta| meta.is_span() && is_store(meta.target()))),
    );
    tracing_subscriber::registry()
        .with(events)
        .with(queries)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
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
