//! The fleet section: what an operator of several instances needs. The
//! Prometheus metrics listener (`METRICS_PORT`, `METRICS_HOST`) and the rate
//! limit shared through Redis (`RATE_LIMIT_REDIS_URL`, `_PREFIX`,
//! `_TIMEOUT`), the OpenTelemetry trace export (`OTEL_EXPORTER_OTLP_ENDPOINT`
//! and the standard `OTEL_*` variables). Everything here is off by default.

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

/// Where spans are exported, over OTLP HTTP/protobuf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traces {
    /// The traces URL: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`.
    pub endpoint: String,
}

#[derive(Debug, Clone, Default)]
pub struct FleetSettings {
    /// `None` (no `METRICS_PORT`): no metrics are recorded or served.
    pub metrics: Option<MetricsListener>,
    /// `None` (no `RATE_LIMIT_REDIS_URL`): each instance limits on its own.
    pub rate_limit_redis: Option<RedisLimit>,
    /// `None` (no OTLP endpoint, or `OTEL_SDK_DISABLED=true`, or
    /// `OTEL_TRACES_EXPORTER=none`): no spans leave the process.
    pub traces: Option<Traces>,
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
            traces: traces(raw)?,
        })
    }
}

/// The OTLP trace export, from the standard variables. The SDK itself reads
/// the others (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
/// `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
/// `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`) from the environment.
fn traces(raw: &Raw) -> anyhow::Result<Option<Traces>> {
    let disabled =
        super::parse::boolean("OTEL_SDK_DISABLED", raw.otel_sdk_disabled.as_deref(), false)?;
    match non_empty(raw.otel_traces_exporter.as_deref()) {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => bail!("OTEL_TRACES_EXPORTER must be \"otlp\" or \"none\" (got {other:?})"),
    }
    for (name, value) in [
        (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            &raw.otel_exporter_otlp_traces_protocol,
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            &raw.otel_exporter_otlp_protocol,
        ),
    ] {
        match non_empty(value.as_deref()) {
            None | Some("http/protobuf") => {}
            Some(other) => bail!(
                "{name} must be \"http/protobuf\", the one OTLP protocol this service speaks (got {other:?})"
            ),
        }
    }
    let endpoint = match (
        non_empty(raw.otel_exporter_otlp_traces_endpoint.as_deref()),
        non_empty(raw.otel_exporter_otlp_endpoint.as_deref()),
    ) {
        (Some(traces), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces.to_owned()),
        (None, Some(base)) => (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("{}/v1/traces", base.trim_end_matches('/')),
        ),
        (None, None) => return Ok(None),
    };
    let (name, url) = endpoint;
    let rest = url.strip_prefix("http://");
    if url.starts_with("https://") {
        bail!(
            "{name} must be an http:// URL: the exporter is built without TLS; send to a collector on the same host or network (got {})",
            tasks_store::redact_url(&url)
        );
    }
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
        bail!(
            "{name} must be an http:// URL (got {})",
            tasks_store::redact_url(&url)
        );
    }
    Ok((!disabled).then_some(Traces { endpoint: url }))
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
    fn traces_follow_the_standard_otel_variables() {
        assert!(Settings::from_pairs([]).unwrap().fleet.traces.is_none());
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/");
        let s = Settings::from_pairs([base]).unwrap();
        assert_eq!(
            s.fleet.traces.unwrap().endpoint,
            "http://127.0.0.1:4318/v1/traces"
        );
        let own = (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4318/custom",
        );
        let s = Settings::from_pairs([base, own]).unwrap();
        assert_eq!(
            s.fleet.traces.unwrap().endpoint,
            "http://collector:4318/custom"
        );
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert!(
                Settings::from_pairs([base, off])
                    .unwrap()
                    .fleet
                    .traces
                    .is_none()
            );
        }
        let grpc = err(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
        assert!(grpc.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{grpc}");
        let tls = err(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://u:pw@otel.example")]);
        assert!(
            tls.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && !tls.contains("pw"),
            "{tls}"
        );
        assert!(
            err(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")])
                .contains("OTEL_EXPORTER_OTLP_ENDPOINT")
        );
        assert!(err(&[base, ("OTEL_TRACES_EXPORTER", "jaeger")]).contains("OTEL_TRACES_EXPORTER"));
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
