//! The database section: `DATABASE_*` and `RUN_MIGRATIONS`, building the
//! store's own [`StoreConfig`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use tasks_store::{DatabaseLocation, ReadReplicaConfig, StoreConfig};

use super::Raw;
use super::parse::{boolean, non_empty, parse_or, seconds};

pub(super) struct Database {
    pub store: StoreConfig,
    /// `DATABASE_STARTUP_TIMEOUT`.
    pub startup_timeout: Duration,
    /// `RUN_MIGRATIONS`.
    pub run_migrations: bool,
}

impl Database {
    /// The default SQLite file lives in `data_dir`; `cores` sizes the
    /// default pool.
    pub(super) fn parse(raw: &Raw, data_dir: &Path, cores: usize) -> anyhow::Result<Self> {
        let location = location(raw.database_url.as_deref(), data_dir)?;
        // The pool bounds database concurrency, not CPU use: requests wait on
        // the database with the CPU idle, so even a one-core instance keeps
        // enough connections in flight (measured in bench/: with 4 the
        // service left PostgreSQL idle; 16 fixed it).
        let default_pool = match location {
            DatabaseLocation::Postgres(_) => (cores * 4).clamp(16, 64),
            DatabaseLocation::Sqlite(_) => (cores * 2).clamp(4, 8),
        };
        let pool_size: usize = parse_or(
            "DATABASE_POOL_SIZE",
            raw.database_pool_size.as_deref(),
            default_pool,
        )?;
        if pool_size == 0 || pool_size > 1000 {
            bail!("DATABASE_POOL_SIZE must be between 1 and 1000 (got {pool_size})");
        }
        let store = StoreConfig {
            location,
            pool_size,
            connect_timeout: seconds(
                "DATABASE_CONNECT_TIMEOUT",
                raw.database_connect_timeout.as_deref(),
                5.0,
            )?,
            query_timeout: seconds(
                "DATABASE_QUERY_TIMEOUT",
                raw.database_query_timeout.as_deref(),
                5.0,
            )?,
            prepared_statements: boolean(
                "DATABASE_PREPARED_STATEMENTS",
                raw.database_prepared_statements.as_deref(),
                true,
            )?,
            read_replica: None,
            write_queue: parse_or(
                "DATABASE_WRITE_QUEUE",
                raw.database_write_queue.as_deref(),
                1024,
            )?,
        };
        if store.write_queue == 0 || store.write_queue > 100_000 {
            bail!(
                "DATABASE_WRITE_QUEUE must be between 1 and 100000 (got {})",
                store.write_queue
            );
        }
        let store = StoreConfig {
            read_replica: read_replica(raw, &store.location)?,
            ..store
        };
        Ok(Self {
            store,
            startup_timeout: seconds(
                "DATABASE_STARTUP_TIMEOUT",
                raw.database_startup_timeout.as_deref(),
                30.0,
            )?,
            run_migrations: boolean("RUN_MIGRATIONS", raw.run_migrations.as_deref(), true)?,
        })
    }
}

/// `DATABASE_READ_URL` (a PostgreSQL standby of `DATABASE_URL`) and
/// `DATABASE_READ_MAX_LAG`.
fn read_replica(
    raw: &Raw,
    primary: &DatabaseLocation,
) -> anyhow::Result<Option<ReadReplicaConfig>> {
    let max_lag = seconds(
        "DATABASE_READ_MAX_LAG",
        raw.database_read_max_lag.as_deref(),
        1.0,
    )?;
    let Some(url) = non_empty(raw.database_read_url.as_deref()) else {
        return Ok(None);
    };
    if matches!(primary, DatabaseLocation::Sqlite(_)) {
        bail!(
            "DATABASE_READ_URL is set but DATABASE_URL is SQLite: read replicas need a PostgreSQL primary (unset DATABASE_READ_URL)"
        );
    }
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!("DATABASE_READ_URL must start with postgres:// or postgresql://");
    }
    if max_lag < Duration::from_millis(100) {
        bail!(
            "DATABASE_READ_MAX_LAG must be at least 0.1 seconds (the replica is sampled every quarter of it)"
        );
    }
    Ok(Some(ReadReplicaConfig {
        url: url.to_owned(),
        max_lag,
    }))
}

/// `DATABASE_URL`: PostgreSQL, an SQLite file, or unset for `data_dir/tasks.db`.
fn location(url: Option<&str>, data_dir: &Path) -> anyhow::Result<DatabaseLocation> {
    Ok(match non_empty(url) {
        None => DatabaseLocation::Sqlite(data_dir.join("tasks.db")),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            DatabaseLocation::Postgres(url.to_owned())
        }
        Some(url) if url.starts_with("sqlite:") => {
            let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
            if path.is_empty() || path == ":memory:" {
                bail!("DATABASE_URL must name an SQLite file, e.g. sqlite://data/tasks.db");
            }
            DatabaseLocation::Sqlite(PathBuf::from(path))
        }
        Some(_) => bail!(
            "DATABASE_URL must start with postgres://, postgresql:// or sqlite:// (leave it unset for the embedded SQLite default)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use tasks_store::DatabaseLocation;

    use crate::settings::Settings;

    #[test]
    fn database_urls() {
        let s = Settings::from_pairs([("DATABASE_URL", "postgresql://u:p@h/db?sslmode=require")])
            .unwrap();
        assert!(matches!(s.store.location, DatabaseLocation::Postgres(_)));
        let s = Settings::from_pairs([("DATABASE_URL", "sqlite://var/t.db")]).unwrap();
        assert_eq!(
            s.store.location,
            DatabaseLocation::Sqlite("var/t.db".into())
        );
    }

    #[test]
    fn read_replica_settings() {
        let s = Settings::from_pairs([
            ("DATABASE_URL", "postgres://u@primary/db"),
            ("DATABASE_READ_URL", "postgres://u:secret@standby/db"),
            ("DATABASE_READ_MAX_LAG", "0.5"),
        ])
        .unwrap();
        let read = s.store.read_replica.unwrap();
        assert_eq!(read.max_lag, std::time::Duration::from_millis(500));
        assert!(!format!("{read:?}").contains("secret"));
        let s = Settings::from_pairs([("DATABASE_URL", "postgres://u@primary/db")]).unwrap();
        assert!(s.store.read_replica.is_none());

        for (pairs, named) in [
            (
                vec![("DATABASE_READ_URL", "postgres://u@standby/db")],
                "DATABASE_READ_URL",
            ),
            (
                vec![
                    ("DATABASE_URL", "postgres://u@primary/db"),
                    ("DATABASE_READ_URL", "mysql://standby/db"),
                ],
                "DATABASE_READ_URL",
            ),
            (
                vec![
                    ("DATABASE_URL", "postgres://u@primary/db"),
                    ("DATABASE_READ_URL", "postgres://u@standby/db"),
                    ("DATABASE_READ_MAX_LAG", "0.01"),
                ],
                "DATABASE_READ_MAX_LAG",
            ),
        ] {
            let err = Settings::from_pairs(pairs).err().unwrap().to_string();
            assert!(err.contains(named), "{err}");
        }
    }
}
