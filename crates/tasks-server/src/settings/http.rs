//! The HTTP section: where to listen, which browser origins may call, and
//! the limits and timeouts a client meets.

use std::time::Duration;

use anyhow::bail;

use super::Raw;
use super::parse::{non_empty, parse_or, seconds};

/// `HOST`, `PORT`, `WORKERS`.
pub(super) struct Listener {
    pub host: String,
    pub port: u16,
    pub workers: usize,
}

impl Listener {
    pub(super) fn parse(raw: &Raw, cores: usize) -> anyhow::Result<Self> {
        let host = non_empty(raw.host.as_deref())
            .unwrap_or("127.0.0.1")
            .to_owned();
        if host != "localhost" && host.parse::<std::net::IpAddr>().is_err() {
            bail!(
                "HOST must be an IP address such as 127.0.0.1 or 0.0.0.0, or localhost (got {host:?})"
            );
        }
        let port: u16 = parse_or("PORT", raw.port.as_deref(), 8000)?;
        let workers: usize = parse_or("WORKERS", raw.workers.as_deref(), cores)?;
        if workers == 0 || workers > 256 {
            bail!("WORKERS must be between 1 and 256 (got {workers})");
        }
        Ok(Self {
            host,
            port,
            workers,
        })
    }
}

/// `CORS_ORIGINS`: a comma-separated list of origins (`scheme://host[:port]`),
/// or `*` for any origin without credentials.
pub(super) fn cors_origins(raw: &Raw) -> anyhow::Result<Vec<String>> {
    let value = raw
        .cors_origins
        .as_deref()
        .unwrap_or("http://localhost:3000");
    let mut origins = Vec::new();
    for origin in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        if origin == "*" {
            origins.push(origin.to_owned());
            continue;
        }
        let origin = origin.trim_end_matches('/');
        let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
            matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains('/')
        });
        if !valid {
            bail!(
                "CORS_ORIGINS entries must be origins like https://app.example.com (got {origin:?})"
            );
        }
        origins.push(origin.to_owned());
    }
    Ok(origins)
}

/// The longest `IDEMPOTENCY_KEY_TTL_SECS`: 7 days (the draft suggests 24 h,
/// Stripe keeps keys 24 h).
const MAX_IDEMPOTENCY_KEY_TTL_SECS: u64 = 7 * 86_400;

/// What one client may send, how fast, and how long it may take.
pub(super) struct Limits {
    pub max_body_bytes: usize,
    pub rate_limit_per_minute: Option<u32>,
    pub rate_limit_burst: Option<u32>,
    pub rate_limit_max_keys: usize,
    pub max_tasks_per_user: u32,
    pub idempotency_key_ttl: Duration,
    pub idempotency_cleanup_interval: Duration,
    pub idempotency_max_keys_per_user: u32,
    pub client_write_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub client_request_timeout: Duration,
    pub client_body_timeout: Duration,
}

impl Limits {
    pub(super) fn parse(raw: &Raw) -> anyhow::Result<Self> {
        let max_body_bytes: usize =
            parse_or("MAX_BODY_BYTES", raw.max_body_bytes.as_deref(), 256 * 1024)?;
        if max_body_bytes < 1024 {
            bail!("MAX_BODY_BYTES must be at least 1024 (got {max_body_bytes})");
        }

        let rate_limit_per_minute: u32 = parse_or(
            "RATE_LIMIT_PER_MINUTE",
            raw.rate_limit_per_minute.as_deref(),
            0,
        )?;
        let rate_limit_burst: Option<u32> = non_empty(raw.rate_limit_burst.as_deref())
            .map(|v| parse_or("RATE_LIMIT_BURST", Some(v), 0))
            .transpose()?;
        if rate_limit_burst == Some(0) {
            bail!("RATE_LIMIT_BURST must be at least 1");
        }
        let rate_limit_max_keys: usize = parse_or(
            "RATE_LIMIT_MAX_KEYS",
            raw.rate_limit_max_keys.as_deref(),
            100_000,
        )?;
        if !(1..=10_000_000).contains(&rate_limit_max_keys) {
            bail!("RATE_LIMIT_MAX_KEYS must be between 1 and 10000000 (got {rate_limit_max_keys})");
        }

        let max_tasks_per_user: u32 = parse_or(
            "MAX_TASKS_PER_USER",
            raw.max_tasks_per_user.as_deref(),
            10_000,
        )?;
        if !(1..=1_000_000).contains(&max_tasks_per_user) {
            bail!("MAX_TASKS_PER_USER must be between 1 and 1000000 (got {max_tasks_per_user})");
        }
        let ttl: u64 = parse_or(
            "IDEMPOTENCY_KEY_TTL_SECS",
            raw.idempotency_key_ttl_secs.as_deref(),
            86_400,
        )?;
        if !(1..=MAX_IDEMPOTENCY_KEY_TTL_SECS).contains(&ttl) {
            bail!(
                "IDEMPOTENCY_KEY_TTL_SECS must be between 1 and {MAX_IDEMPOTENCY_KEY_TTL_SECS} (got {ttl})"
            );
        }
        let cleanup: u64 = parse_or(
            "IDEMPOTENCY_CLEANUP_INTERVAL_SECS",
            raw.idempotency_cleanup_interval_secs.as_deref(),
            60,
        )?;
        if !(1..=86_400).contains(&cleanup) {
            bail!("IDEMPOTENCY_CLEANUP_INTERVAL_SECS must be between 1 and 86400 (got {cleanup})");
        }
        let idempotency_max_keys_per_user: u32 = parse_or(
            "IDEMPOTENCY_MAX_KEYS_PER_USER",
            raw.idempotency_max_keys_per_user.as_deref(),
            10_000,
        )?;
        if !(1..=1_000_000).contains(&idempotency_max_keys_per_user) {
            bail!(
                "IDEMPOTENCY_MAX_KEYS_PER_USER must be between 1 and 1000000 (got {idempotency_max_keys_per_user})"
            );
        }
        let client_write_timeout = seconds(
            "CLIENT_WRITE_TIMEOUT",
            raw.client_write_timeout.as_deref(),
            30.0,
        )?;
        if client_write_timeout < Duration::from_secs(1) {
            bail!("CLIENT_WRITE_TIMEOUT must be at least 1 second");
        }

        Ok(Self {
            max_body_bytes,
            // 0, the default, is unlimited.
            rate_limit_per_minute: (rate_limit_per_minute > 0).then_some(rate_limit_per_minute),
            rate_limit_burst,
            rate_limit_max_keys,
            max_tasks_per_user,
            idempotency_key_ttl: Duration::from_secs(ttl),
            idempotency_cleanup_interval: Duration::from_secs(cleanup),
            idempotency_max_keys_per_user,
            client_write_timeout,
            shutdown_timeout: seconds("SHUTDOWN_TIMEOUT", raw.shutdown_timeout.as_deref(), 30.0)?,
            client_request_timeout: seconds(
                "CLIENT_REQUEST_TIMEOUT",
                raw.client_request_timeout.as_deref(),
                10.0,
            )?,
            client_body_timeout: seconds(
                "CLIENT_BODY_TIMEOUT",
                raw.client_body_timeout.as_deref(),
                10.0,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::Settings;

    #[test]
    fn cors_origins_list() {
        let s =
            Settings::from_pairs([("CORS_ORIGINS", "https://a.example, http://localhost:3000/")])
                .unwrap();
        assert_eq!(
            s.cors_origins,
            vec!["https://a.example", "http://localhost:3000"]
        );
    }
}
