//! Embedded migrations, applied at start-up or by `tasks-server migrate`.

use anyhow::Context as _;
use diesel::Connection as _;
use diesel::connection::SimpleConnection as _;
use diesel::sqlite::SqliteConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::{DatabaseLocation, StoreConfig, pg::PgConnector};

const POSTGRES: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// Any number: it only has to be the same in every instance of the service.
const MIGRATION_LOCK: i64 = 0x7461_736b_735f_6462; // "tasks_db"

/// Applies pending migrations and returns the versions it applied. Instances
/// starting together on one PostgreSQL serialise on an advisory lock, and
/// all pending migrations apply in one transaction (all or none).
///
/// # Errors
/// The database cannot be reached or a migration failed (it is rolled back).
pub async fn run_migrations(config: &StoreConfig) -> anyhow::Result<Vec<String>> {
    match &config.location {
        DatabaseLocation::Postgres(url) => {
            let conn = PgConnector::new(url, config.connect_timeout)?
                .connect()
                .await
                .context("connecting to PostgreSQL to run migrations")?;
            tokio::task::spawn_blocking(move || {
                let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
                // One transaction for the lock and every migration: the lock
                // ends with it, and a transaction-pooling PgBouncer keeps the
                // whole run on one server connection.
                conn.transaction(|conn| {
                    conn.batch_execute(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))?;
                    apply(conn, POSTGRES)
                })
            })
            .await
            .context("migration task panicked")?
        }
        DatabaseLocation::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the data directory {}", dir.display()))?;
            }
            let path = path.to_string_lossy().into_owned();
            tokio::task::spawn_blocking(move || {
                let mut conn = SqliteConnection::establish(&path)
                    .with_context(|| format!("opening SQLite database {path}"))?;
                // WAL lets readers run beside the writer; it is a property of
                // the file, so setting it once here is enough.
                conn.batch_execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;")?;
                apply(&mut conn, SQLITE)
            })
            .await
            .context("migration task panicked")?
        }
    }
}

fn apply<C>(conn: &mut C, migrations: EmbeddedMigrations) -> anyhow::Result<Vec<String>>
where
    C: MigrationHarness<C::Backend> + diesel::Connection,
{
    let applied = conn
        .run_pending_migrations(migrations)
        .map_err(|e| anyhow::anyhow!("applying migrations: {e}"))?;
    Ok(applied.iter().map(ToString::to_string).collect())
}
