//! The fleet section: what an operator of several instances needs. The
//! Prometheus metrics listener (`METRICS_PORT`, `METRICS_HOST`) and the rate
//! limit shared through Redis (`RATE_LIMIT_REDIS_URL`, `_PREFIX`,
//! `_TIMEOUT`). Everything here is off by default.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::bail;
use secrecy::SecretString;

use super::Raw;
use super::parse::{non_empty, parse_or, seconds};

/// Where `/metrics` is served, when it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsListener {
    /// `METRICS_HOST`: loopback unless the operator opens it on purpose.
    pub host: IpAddr,
    /// `METRICS_PORT`; 0 picks a free port (tests).
    pub port: u16,
}

/// Where the per-user rate limit is kept when it is shared by instances.
#[derive(Debug, Clone)]
pub struct RedisLimit {
    /// `RATE_LIMIT_REDIS_URL`: `redis://` or `rediss://`; may hold a password.
    pub url: SecretString,
    /// `RATE_LIMIT_REDIS_PREFIX`: prepended to each user's key, so that
    /// services (or tests) sharing a Redis do not share buckets.
    pub prefix: String,
    /// `RATE_LIMIT_REDIS_TIMEOUT`: longest wait for Redis on a request, and
    /// for a connection; past it the local limiter answers.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct FleetSettings {
    /// `None` (no `METRICS_PORT`): no metrics are recorded or served.
    pub metrics: Option<MetricsListener>,
    /// `None` (no `RATE_LIMIT_REDIS_URL`): each instance limits on its own.
    pub rate_limit_redis: Option<RedisLimit>,
}

impl FleetSettings {
    /// `rate_limited`: whether `RATE_LIMIT_PER_MINUTE` turned the limit on.
    pub(super) fn parse(raw: &Raw, rate_limited: bool) -> anyhow::Result<Self> {
        let host = match non_empty(raw.metrics_host.as_deref()) {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(h) => h.parse().map_err(|_| {
                anyhow::anyhow!("METRICS_HOST must be an IP address such as 127.0.0.1 (got {h:?})")
            })?,
        };
        let metrics = match non_empty(raw.metrics_port.as_deref()) {
            None => None,
            Some(_) => Some(MetricsListener {
                host,
                port: parse_or("METRICS_PORT", raw.metrics_port.as_deref(), 0)?,
            }),
        };
        if metrics.is_none() && non_empty(raw.metrics_host.as_deref()).is_some() {
            bail!(
                "METRICS_HOST is set but METRICS_PORT is not: set METRICS_PORT to serve /metrics"
            );
        }
        let rate_limit_redis = match non_empty(raw.rate_limit_redis_url.as_deref()) {
            None => None,
            Some(_) if !rate_limited => bail!(
                "RATE_LIMIT_REDIS_URL is set but RATE_LIMIT_PER_MINUTE is not: set the limit to share"
            ),
            Some(url) => {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    bail!(
                        "RATE_LIMIT_REDIS_URL must be a redis:// or rediss:// URL (got {})",
                        tasks_store::redact_url(url)
                    );
                }
                Some(RedisLimit {
                    url: SecretString::from(url.to_owned()),
                    prefix: non_empty(raw.rate_limit_redis_prefix.as_deref())
                        .unwrap_or("tasks:ratelimit:")
                        .to_owned(),
                    timeout: seconds(
                        "RATE_LIMIT_REDIS_TIMEOUT",
                        raw.rate_limit_redis_timeout.as_deref(),
                        0.1,
                    )?,
                })
            }
        };
        Ok(Self {
            metrics,
            rate_limit_redis,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::super::tests::err;

    #[test]
    fn metrics_are_off_by_default_and_loopback_when_on() {
        let s = Settings::from_pairs([]).unwrap();
        assert!(s.fleet.metrics.is_none());
        let s = Settings::from_pairs([("METRICS_PORT", "9464")]).unwrap();
        let m = s.fleet.metrics.unwrap();
        assert_eq!((m.host.to_string().as_str(), m.port), ("127.0.0.1", 9464));
    }

    #[test]
    fn redis_rate_limit_needs_a_limit_and_a_redis_url() {
        let s = Settings::from_pairs([("RATE_LIMIT_PER_MINUTE", "60")]).unwrap();
        assert!(s.fleet.rate_limit_redis.is_none());
        let s = Settings::from_pairs([
            ("RATE_LIMIT_PER_MINUTE", "60"),
            ("RATE_LIMIT_REDIS_URL", "redis://:hunter2@127.0.0.1:6379/0"),
        ])
        .unwrap();
        let redis = s.fleet.rate_limit_redis.as_ref().unwrap();
        assert_eq!(redis.prefix, "tasks:ratelimit:");
        assert_eq!(redis.timeout, std::time::Duration::from_millis(100));
        assert!(!format!("{s:?}").contains("hunter2"));
        let url = ("RATE_LIMIT_REDIS_URL", "redis://127.0.0.1:6379");
        assert!(err(&[url]).contains("RATE_LIMIT_PER_MINUTE"));
        let limit = ("RATE_LIMIT_PER_MINUTE", "60");
        let bad = err(&[limit, ("RATE_LIMIT_REDIS_URL", "http://u:pw@127.0.0.1")]);
        assert!(
            bad.contains("RATE_LIMIT_REDIS_URL") && !bad.contains("pw"),
            "{bad}"
        );
        let slow = err(&[limit, url, ("RATE_LIMIT_REDIS_TIMEOUT", "0")]);
        assert!(slow.contains("RATE_LIMIT_REDIS_TIMEOUT"));
    }

    #[test]
    fn bad_metrics_values_name_their_variable() {
        assert!(err(&[("METRICS_PORT", "http")]).contains("METRICS_PORT"));
        assert!(err(&[("METRICS_PORT", "70000")]).contains("METRICS_PORT"));
        assert!(
            err(&[("METRICS_PORT", "9464"), ("METRICS_HOST", "example.com")])
                .contains("METRICS_HOST")
        );
        assert!(err(&[("METRICS_HOST", "0.0.0.0")]).contains("METRICS_PORT"));
    }
}
