//! Logging set-up. Log lines carry the request id of the request they belong
//! to (through the `request` span); tokens, secrets and task text are never
//! recorded anywhere in this service.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::settings::LogFormat;

/// Installs the global subscriber. Call once, from `main`.
///
/// # Errors
/// The filter is invalid or a subscriber was already installed.
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_span_events(FmtSpan::NONE)
        .with_target(false);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Compact => builder
            .compact()
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
    }
    .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}
