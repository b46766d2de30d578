//! The small typed parsers every section uses. Each takes the variable's
//! name, so a bad value stops start-up with a message naming it.

use std::fmt;
use std::time::Duration;

use anyhow::bail;

/// The value with surrounding white space removed, or `None` when that
/// leaves nothing (an empty variable counts as unset).
pub(super) fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

pub(super) fn parse_or<T>(name: &str, value: Option<&str>, default: T) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    match non_empty(value) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|e| anyhow::anyhow!("{name} is invalid ({v:?}): {e}")),
    }
}

/// A number of seconds, fractions allowed, in (0, 3600].
pub(super) fn seconds(name: &str, value: Option<&str>, default: f64) -> anyhow::Result<Duration> {
    let secs: f64 = parse_or(name, value, default)?;
    if !(secs > 0.0 && secs <= 3600.0) {
        bail!("{name} must be a number of seconds between 0 and 3600 (got {secs})");
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(super) fn boolean(name: &str, value: Option<&str>, default: bool) -> anyhow::Result<bool> {
    match non_empty(value).map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => bail!("{name} must be true or false (got {other:?})"),
    }
}

/// An `http://` or `https://` URL with a host, without its trailing slashes.
pub(super) fn validate_http_url(name: &str, value: &str) -> anyhow::Result<String> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => {
            Ok(value.trim_end_matches('/').to_owned())
        }
        _ => bail!("{name} must be an http:// or https:// URL (got {value:?})"),
    }
}
