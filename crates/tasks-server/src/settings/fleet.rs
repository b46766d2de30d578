//! The fleet section: what an operator of several instances needs. The
//! Prometheus metrics listener (`METRICS_PORT`, `METRICS_HOST`). Everything
//! here is off by default.

use std::net::IpAddr;

use anyhow::bail;

use super::Raw;
use super::parse::{non_empty, parse_or};

/// Where `/metrics` is served, when it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsListener {
    /// `METRICS_HOST`: loopback unless the operator opens it on purpose.
    pub host: IpAddr,
    /// `METRICS_PORT`; 0 picks a free port (tests).
    pub port: u16,
}

#[derive(Debug, Clone, Default)]
pub struct FleetSettings {
    /// `None` (no `METRICS_PORT`): no metrics are recorded or served.
    pub metrics: Option<MetricsListener>,
}

impl FleetSettings {
    pub(super) fn parse(raw: &Raw) -> anyhow::Result<Self> {
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
        Ok(Self { metrics })
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
