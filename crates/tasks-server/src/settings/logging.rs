//! The logging section: `LOG_FORMAT`, `LOG_LEVEL` / `RUST_LOG`, `LOG_DRIVER_DEBUG`.

use anyhow::bail;

use super::Raw;
use super::parse::{boolean, non_empty};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable, one line per event.
    Compact,
}

pub(super) struct Logging {
    pub format: LogFormat,
    pub filter: String,
    pub driver_debug: bool,
}

impl Logging {
    pub(super) fn parse(raw: &Raw, production: bool) -> anyhow::Result<Self> {
        let format = match non_empty(raw.log_format.as_deref()) {
            None if production => LogFormat::Json,
            None => LogFormat::Compact,
            Some("json") => LogFormat::Json,
            Some("compact" | "pretty" | "text") => LogFormat::Compact,
            Some(other) => bail!("LOG_FORMAT must be \"json\" or \"compact\" (got {other:?})"),
        };
        let filter = non_empty(raw.log_level.as_deref())
            .or_else(|| non_empty(raw.rust_log.as_deref()))
            .unwrap_or("info")
            .to_owned();
        tracing_subscriber::EnvFilter::try_new(&filter)
            .map_err(|e| anyhow::anyhow!("LOG_LEVEL/RUST_LOG is not a valid log filter: {e}"))?;
        let driver_debug = boolean("LOG_DRIVER_DEBUG", raw.log_driver_debug.as_deref(), false)?;
        if production && driver_debug {
            bail!(
                "LOG_DRIVER_DEBUG=true is refused in production: driver debug lines print SQL parameters, which include Better Auth session tokens"
            );
        }
        Ok(Self {
            format,
            filter,
            driver_debug,
        })
    }
}
