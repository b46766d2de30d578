//! The live-updates section: `GET /api/tasks/events` (Server-Sent Events).
//! `SSE_*` bound the streams; `DATABASE_DIRECT_URL` is the connection the
//! PostgreSQL listener uses.

use std::time::Duration;

use anyhow::bail;
use secrecy::SecretString;
use tasks_store::DatabaseLocation;

use super::Raw;
use super::parse::{non_empty, parse_or, seconds};

#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// `SSE_MAX_STREAMS`: open event streams per instance, all users.
    pub max_streams: usize,
    /// `SSE_MAX_STREAMS_PER_USER`: open event streams of one user per instance.
    pub max_streams_per_user: usize,
    /// `SSE_HEARTBEAT_INTERVAL`: a comment line after this much silence.
    pub heartbeat: Duration,
    /// `SSE_REVERIFY_INTERVAL`: how often a stream's credential is checked
    /// again through the verifier (revoked sessions end the stream).
    pub reverify: Duration,
    /// `SSE_RETRY`: the reconnection delay sent to clients in `retry:`.
    pub retry: Duration,
    /// `SSE_WATCH_TTL` (PostgreSQL only): how long a registration of a
    /// user as watched lasts; while streams are open the instance renews
    /// them every half of it (see `crate::live::watch`).
    pub watch_ttl: Duration,
    /// `DATABASE_DIRECT_URL` (PostgreSQL only; default `DATABASE_URL`): the
    /// non-pooled connection that `LISTEN`s for changes. `None` on SQLite.
    pub direct_url: Option<SecretString>,
}

impl LiveSettings {
    pub(super) fn parse(raw: &Raw, location: &DatabaseLocation) -> anyhow::Result<Self> {
        let max_streams: usize = parse_or("SSE_MAX_STREAMS", raw.sse_max_streams.as_deref(), 1000)?;
        if max_streams == 0 || max_streams > 1_000_000 {
            bail!("SSE_MAX_STREAMS must be between 1 and 1000000 (got {max_streams})");
        }
        let max_streams_per_user: usize = parse_or(
            "SSE_MAX_STREAMS_PER_USER",
            raw.sse_max_streams_per_user.as_deref(),
            8,
        )?;
        if max_streams_per_user == 0 || max_streams_per_user > max_streams {
            bail!(
                "SSE_MAX_STREAMS_PER_USER must be between 1 and SSE_MAX_STREAMS ({max_streams}) (got {max_streams_per_user})"
            );
        }
        let direct_url = match (location, non_empty(raw.database_direct_url.as_deref())) {
            (DatabaseLocation::Sqlite(_), Some(_)) => bail!(
                "DATABASE_DIRECT_URL is set but DATABASE_URL is SQLite: the direct listener connection is for PostgreSQL (unset DATABASE_DIRECT_URL)"
            ),
            (DatabaseLocation::Sqlite(_), None) => None,
            (DatabaseLocation::Postgres(_), Some(url))
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) =>
            {
                bail!("DATABASE_DIRECT_URL must start with postgres:// or postgresql://")
            }
            (DatabaseLocation::Postgres(_), Some(url)) => Some(url.to_owned().into()),
            (DatabaseLocation::Postgres(url), None) => Some(url.clone().into()),
        };
        let watch_ttl = seconds("SSE_WATCH_TTL", raw.sse_watch_ttl.as_deref(), 120.0)?;
        if watch_ttl < Duration::from_secs(2) {
            bail!(
                "SSE_WATCH_TTL must be a number of seconds between 2 and 3600 (got {})",
                watch_ttl.as_secs_f64()
            );
        }
        Ok(Self {
            max_streams,
            max_streams_per_user,
            heartbeat: seconds(
                "SSE_HEARTBEAT_INTERVAL",
                raw.sse_heartbeat_interval.as_deref(),
                20.0,
            )?,
            reverify: seconds(
                "SSE_REVERIFY_INTERVAL",
                raw.sse_reverify_interval.as_deref(),
                30.0,
            )?,
            retry: seconds("SSE_RETRY", raw.sse_retry.as_deref(), 3.0)?,
            watch_ttl,
            direct_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::ExposeSecret as _;

    use crate::settings::Settings;
    use crate::settings::tests::err;

    #[test]
    fn live_defaults_and_direct_url() {
        let s = Settings::from_pairs([]).unwrap();
        assert_eq!(s.live.max_streams, 1000);
        assert_eq!(s.live.max_streams_per_user, 8);
        assert_eq!(s.live.heartbeat, Duration::from_secs(20));
        assert_eq!(s.live.watch_ttl, Duration::from_secs(120));
        assert!(s.live.direct_url.is_none());
        let s = Settings::from_pairs([("DATABASE_URL", "postgres://u:pw@pooler/db")]).unwrap();
        assert_eq!(
            s.live.direct_url.unwrap().expose_secret(),
            "postgres://u:pw@pooler/db"
        );
        let s = Settings::from_pairs([
            ("DATABASE_URL", "postgres://u:pw@pooler/db"),
            ("DATABASE_DIRECT_URL", "postgres://u:pw-direct-9@direct/db"),
        ])
        .unwrap();
        assert!(!format!("{s:?}").contains("pw-direct-9"));
        assert_eq!(
            s.live.direct_url.unwrap().expose_secret(),
            "postgres://u:pw-direct-9@direct/db"
        );
    }

    #[test]
    fn live_invalid_values_name_their_variable() {
        assert!(err(&[("SSE_MAX_STREAMS", "0")]).contains("SSE_MAX_STREAMS"));
        assert!(err(&[("SSE_MAX_STREAMS_PER_USER", "many")]).contains("SSE_MAX_STREAMS_PER_USER"));
        assert!(
            err(&[("SSE_MAX_STREAMS", "4"), ("SSE_MAX_STREAMS_PER_USER", "5")])
                .contains("SSE_MAX_STREAMS_PER_USER")
        );
        assert!(err(&[("SSE_HEARTBEAT_INTERVAL", "0")]).contains("SSE_HEARTBEAT_INTERVAL"));
        assert!(err(&[("SSE_REVERIFY_INTERVAL", "x")]).contains("SSE_REVERIFY_INTERVAL"));
        assert!(err(&[("SSE_WATCH_TTL", "1")]).contains("SSE_WATCH_TTL"));
        assert!(err(&[("SSE_WATCH_TTL", "3601")]).contains("SSE_WATCH_TTL"));
        assert!(err(&[("DATABASE_DIRECT_URL", "postgres://h/db")]).contains("DATABASE_DIRECT_URL"));
        assert!(
            err(&[
                ("DATABASE_URL", "postgres://h/db"),
                ("DATABASE_DIRECT_URL", "mysql://h/db")
            ])
            .contains("DATABASE_DIRECT_URL")
        );
    }
}
