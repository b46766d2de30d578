//! The change log's retention: `CHANGE_LOG_RETENTION_SECS`,
//! `MAX_TOMBSTONES_PER_USER` and `CHANGE_LOG_CLEANUP_INTERVAL`.

use std::time::Duration;

use anyhow::bail;
use tasks_store::ChangeRetention;

use super::Raw;
use super::parse::{parse_or, seconds};

/// Deletions are remembered this long by default: 30 days, so a client
/// offline for up to a month catches up without a full reload.
pub const DEFAULT_RETENTION_SECS: u64 = 30 * 24 * 3600;
/// Deletions remembered per user at most by default.
pub const DEFAULT_MAX_TOMBSTONES: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeLogSettings {
    pub retention: ChangeRetention,
    /// How often the clean-up runs (`CHANGE_LOG_CLEANUP_INTERVAL`).
    pub cleanup_interval: Duration,
}

impl ChangeLogSettings {
    pub(super) fn parse(raw: &Raw) -> anyhow::Result<Self> {
        let retention_secs: u64 = parse_or(
            "CHANGE_LOG_RETENTION_SECS",
            raw.change_log_retention_secs.as_deref(),
            DEFAULT_RETENTION_SECS,
        )?;
        if !(1..=10 * 365 * 24 * 3600).contains(&retention_secs) {
            bail!(
                "CHANGE_LOG_RETENTION_SECS must be between 1 and 315360000 (ten years) (got {retention_secs})"
            );
        }
        let max_tombstones: u32 = parse_or(
            "MAX_TOMBSTONES_PER_USER",
            raw.max_tombstones_per_user.as_deref(),
            DEFAULT_MAX_TOMBSTONES,
        )?;
        if !(1..=10_000_000).contains(&max_tombstones) {
            bail!("MAX_TOMBSTONES_PER_USER must be between 1 and 10000000 (got {max_tombstones})");
        }
        let cleanup_interval = seconds(
            "CHANGE_LOG_CLEANUP_INTERVAL",
            raw.change_log_cleanup_interval.as_deref(),
            60.0,
        )?;
        Ok(Self {
            retention: ChangeRetention {
                max_age: Duration::from_secs(retention_secs),
                max_tombstones,
                // Ten intervals: a few missed rounds still trim everyone.
                cap_window: cleanup_interval * 10,
            },
            cleanup_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::settings::Settings;
    use crate::settings::tests::err;

    #[test]
    fn change_log_defaults_and_bounds() {
        let s = Settings::from_pairs([]).unwrap().change_log;
        assert_eq!(s.retention.max_age, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(s.retention.max_tombstones, 10_000);
        assert_eq!(s.cleanup_interval, Duration::from_secs(60));
        let s = Settings::from_pairs([
            ("CHANGE_LOG_RETENTION_SECS", "5"),
            ("MAX_TOMBSTONES_PER_USER", "3"),
            ("CHANGE_LOG_CLEANUP_INTERVAL", "0.5"),
        ])
        .unwrap()
        .change_log;
        assert_eq!(s.retention.max_age, Duration::from_secs(5));
        assert_eq!(s.retention.max_tombstones, 3);
        assert_eq!(s.cleanup_interval, Duration::from_millis(500));
        for (name, bad) in [
            ("CHANGE_LOG_RETENTION_SECS", "0"),
            ("CHANGE_LOG_RETENTION_SECS", "a month"),
            ("CHANGE_LOG_RETENTION_SECS", "999999999999"),
            ("MAX_TOMBSTONES_PER_USER", "0"),
            ("MAX_TOMBSTONES_PER_USER", "-1"),
            ("CHANGE_LOG_CLEANUP_INTERVAL", "0"),
            ("CHANGE_LOG_CLEANUP_INTERVAL", "7200"),
        ] {
            assert!(err(&[(name, bad)]).contains(name), "{name}={bad}");
        }
    }
}
