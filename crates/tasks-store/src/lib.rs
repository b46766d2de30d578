//! The Diesel adapter of the [`TaskRepository`] port.
//!
//! One store, two backends: PostgreSQL through diesel-async and deadpool (the
//! production path, no libpq) and an embedded SQLite file through diesel's
//! synchronous connection wrapped for async (the zero-setup default). Every
//! query is written once: the [`with_conn!`] macro runs the same body against
//! whichever pool the store holds, with `tasks` bound to that backend's table.
//!
//! Ownership is part of every `WHERE` clause; toggles and updates are single
//! `UPDATE ... RETURNING` statements, so each request is one round trip and
//! concurrent toggles never lose one another.

mod config;
mod errors;
mod migrate;
mod pg;
mod schema;

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::FutureExt as _;
use tasks_domain::{Description, NewTask, OwnerId, StatusFilter, Task, TaskId, TaskPatch, Title};
use tasks_ports::{RepoError, TaskRepository};

pub use config::{DatabaseLocation, StoreConfig, redact_url};
pub use migrate::run_migrations;

use errors::{pool_error, query_error};

type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// A task row as every query selects it, in column order.
type Row = (
    i64,
    String,
    String,
    Option<String>,
    bool,
    DateTime<Utc>,
    DateTime<Utc>,
);

/// The columns of [`Row`], for `select` and `returning`.
macro_rules! columns {
    ($t:ident) => {
        (
            $t::id,
            $t::user_id,
            $t::title,
            $t::description,
            $t::completed,
            $t::created_at,
            $t::updated_at,
        )
    };
}

/// Runs `$body` with `$conn` bound to a pooled connection and `tasks` bound
/// to the matching table module, under the store's query timeout.
macro_rules! with_conn {
    ($store:expr, |$conn:ident| $body:expr) => {
        match &$store.backend {
            Backend::Postgres(pool) => {
                #[allow(unused_imports)]
                use crate::schema::pg::tasks;
                let mut object = pool.get().await.map_err(pool_error)?;
                let result = {
                    let conn: &mut AsyncPgConnection = &mut object;
                    tokio::time::timeout($store.query_timeout, async {
                        if $store.prepared_statements {
                            let $conn = conn;
                            $body
                        } else {
                            // Behind a transaction-pooling PgBouncer, prepare,
                            // execute and close must reach the same server:
                            // an explicit transaction pins one.
                            conn.transaction(async |$conn| $body).await
                        }
                    })
                    .await
                };
                finish(object, result)
            }
            Backend::Sqlite(pool) => {
                #[allow(unused_imports)]
                use crate::schema::sqlite::tasks;
                let mut object = pool.get().await.map_err(pool_error)?;
                let result = {
                    let $conn: &mut SqliteConn = &mut object;
                    tokio::time::timeout($store.query_timeout, async { $body }).await
                };
                finish(object, result)
            }
        }
    };
}

/// Settles a timed query: a connection whose query ran out of time or failed
/// at the connection level is taken out of the pool and closed, since its
/// state is unknown.
fn finish<M: deadpool::managed::Manager, T>(
    object: deadpool::managed::Object<M>,
    result: Result<QueryResult<T>, tokio::time::error::Elapsed>,
) -> Result<T, RepoError> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => {
            let err = query_error(err);
            if matches!(err, RepoError::Unavailable(_)) {
                // The connection itself is suspect: never hand it out again.
                drop(deadpool::managed::Object::take(object));
            }
            Err(err)
        }
        Err(_elapsed) => {
            drop(deadpool::managed::Object::take(object));
            Err(RepoError::Unavailable(anyhow::anyhow!(
                "query did not finish within the query timeout"
            )))
        }
    }
}

enum Backend {
    Postgres(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteConn>),
}

/// The Diesel implementation of [`TaskRepository`].
pub struct DieselTaskStore {
    backend: Backend,
    query_timeout: Duration,
    prepared_statements: bool,
}

impl DieselTaskStore {
    /// Builds the connection pool. No connection is opened yet, so the service
    /// can start while the database is still coming up.
    ///
    /// # Errors
    /// The configuration is invalid (for example an unparseable URL).
    pub fn connect(config: &StoreConfig) -> anyhow::Result<Self> {
        let timeouts = deadpool::managed::Timeouts {
            wait: Some(config.connect_timeout),
            create: Some(config.connect_timeout),
            recycle: Some(config.connect_timeout),
        };
        let backend = match &config.location {
            DatabaseLocation::Postgres(url) => {
                let connector = pg::PgConnector::new(url, config.connect_timeout)?;
                let prepared = config.prepared_statements;
                let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
                // A checkout checks that the socket is open and no transaction
                // is left over, without a `SELECT 1` round trip per request;
                // connections that fail mid-query are discarded in `finish`.
                manager_config.recycling_method = RecyclingMethod::Fast;
                manager_config.custom_setup = Box::new(move |_url| {
                    let connector = connector.clone();
                    async move {
                        let mut conn = if prepared {
                            connector.connect().await?
                        } else {
                            connector.connect_pooled().await?
                        };
                        if !prepared {
                            AsyncConnection::set_prepared_statement_cache_size(
                                &mut conn,
                                diesel::connection::CacheSize::Disabled,
                            );
                        }
                        Ok(conn)
                    }
                    .boxed()
                });
                let manager =
                    AsyncDieselConnectionManager::new_with_config(url.clone(), manager_config);
                let pool = Pool::builder(manager)
                    .max_size(config.pool_size)
                    .timeouts(timeouts)
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .context("building the PostgreSQL connection pool")?;
                Backend::Postgres(pool)
            }
            DatabaseLocation::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).with_context(|| {
                        format!("creating the data directory {}", dir.display())
                    })?;
                }
                let busy_ms = config.query_timeout.as_millis();
                let mut manager_config = ManagerConfig::<SqliteConn>::default();
                manager_config.recycling_method = RecyclingMethod::Fast;
                manager_config.custom_setup = Box::new(move |url| {
                    let url = url.to_owned();
                    async move {
                        let mut conn = SqliteConn::establish(&url).await?;
                        conn.batch_execute(&format!(
                            "PRAGMA busy_timeout = {busy_ms}; PRAGMA foreign_keys = ON;"
                        ))
                        .await
                        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                        Ok(conn)
                    }
                    .boxed()
                });
                let manager = AsyncDieselConnectionManager::new_with_config(
                    path.to_string_lossy().into_owned(),
                    manager_config,
                );
                let pool = Pool::builder(manager)
                    .max_size(config.pool_size)
                    .timeouts(timeouts)
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .context("building the SQLite connection pool")?;
                Backend::Sqlite(pool)
            }
        };
        Ok(Self {
            backend,
            query_timeout: config.query_timeout,
            prepared_statements: config.prepared_statements,
        })
    }

    /// Connections currently open and idle, for diagnostics.
    #[must_use]
    pub fn pool_status(&self) -> (usize, usize) {
        let s = match &self.backend {
            Backend::Postgres(p) => p.status(),
            Backend::Sqlite(p) => p.status(),
        };
        (s.size, s.available)
    }

    /// Closes every connection; later calls fail as `Unavailable`.
    pub fn close(&self) {
        match &self.backend {
            Backend::Postgres(p) => p.close(),
            Backend::Sqlite(p) => p.close(),
        }
    }
}

/// Converts a row selected for `owner`. The query already filtered by owner;
/// comparing again (instead of re-parsing the id) is cheap and turns a
/// mis-written query into an error rather than a leak.
fn into_task(row: Row, owner: &OwnerId) -> Result<Task, RepoError> {
    let (id, user_id, title, description, completed, created_at, updated_at) = row;
    if user_id != owner.as_str() {
        return Err(RepoError::Unexpected(anyhow::anyhow!(
            "task {id}: a query for one owner returned another owner's row"
        )));
    }
    // Rows were written through the same domain types; a row that no longer
    // parses means the data was changed behind the service's back.
    let corrupt =
        |what: &str| RepoError::Unexpected(anyhow::anyhow!("task {id}: stored {what} is invalid"));
    Ok(Task {
        id: TaskId::new(id),
        owner: owner.clone(),
        title: Title::parse(&title).map_err(|_| corrupt("title"))?,
        description: description
            .map(Description::parse)
            .transpose()
            .map_err(|_| corrupt("description"))?,
        completed,
        created_at,
        updated_at,
    })
}

fn into_tasks(rows: Vec<Row>, owner: &OwnerId) -> Result<Vec<Task>, RepoError> {
    rows.into_iter().map(|row| into_task(row, owner)).collect()
}

#[async_trait]
impl TaskRepository for DieselTaskStore {
    async fn list(&self, owner: &OwnerId, filter: StatusFilter) -> Result<Vec<Task>, RepoError> {
        let rows: Vec<Row> = with_conn!(self, |conn| {
            // Two static queries rather than one boxed one: each keeps a
            // prepared statement cached under a compile-time key.
            let mine = tasks::table
                .filter(tasks::user_id.eq(owner.as_str()))
                .select(columns!(tasks))
                .order(tasks::id.desc());
            match filter.completed() {
                None => mine.load::<Row>(conn).await,
                Some(completed) => {
                    mine.filter(tasks::completed.eq(completed))
                        .load::<Row>(conn)
                        .await
                }
            }
        })?;
        into_tasks(rows, owner)
    }

    async fn get(&self, owner: &OwnerId, id: TaskId) -> Result<Option<Task>, RepoError> {
        let row: Option<Row> = with_conn!(self, |conn| {
            tasks::table
                .filter(tasks::id.eq(id.get()))
                .filter(tasks::user_id.eq(owner.as_str()))
                .select(columns!(tasks))
                .first::<Row>(conn)
                .await
                .optional()
        })?;
        row.map(|r| into_task(r, owner)).transpose()
    }

    async fn create(&self, owner: &OwnerId, task: NewTask) -> Result<Task, RepoError> {
        let now = tasks_domain::now();
        let row: Row = with_conn!(self, |conn| {
            diesel::insert_into(tasks::table)
                .values((
                    tasks::user_id.eq(owner.as_str()),
                    tasks::title.eq(task.title.as_str()),
                    tasks::description.eq(task.description.as_ref().map(Description::as_str)),
                    tasks::completed.eq(false),
                    tasks::created_at.eq(now),
                    tasks::updated_at.eq(now),
                ))
                .returning(columns!(tasks))
                .get_result::<Row>(conn)
                .await
        })?;
        into_task(row, owner)
    }

    async fn update(
        &self,
        owner: &OwnerId,
        id: TaskId,
        patch: TaskPatch,
    ) -> Result<Option<Task>, RepoError> {
        let now = tasks_domain::now();
        let title = patch.title.as_ref().map(Title::as_str);
        let description = patch
            .description
            .as_ref()
            .map(|d| d.as_ref().map(Description::as_str));
        let row: Option<Row> = with_conn!(self, |conn| {
            diesel::update(
                tasks::table
                    .filter(tasks::id.eq(id.get()))
                    .filter(tasks::user_id.eq(owner.as_str())),
            )
            .set((
                title.map(|t| tasks::title.eq(t)),
                description.map(|d| tasks::description.eq(d)),
                patch.completed.map(|c| tasks::completed.eq(c)),
                tasks::updated_at.eq(now),
            ))
            .returning(columns!(tasks))
            .get_result::<Row>(conn)
            .await
            .optional()
        })?;
        row.map(|r| into_task(r, owner)).transpose()
    }

    async fn toggle(&self, owner: &OwnerId, id: TaskId) -> Result<Option<Task>, RepoError> {
        let now = tasks_domain::now();
        let row: Option<Row> = with_conn!(self, |conn| {
            diesel::update(
                tasks::table
                    .filter(tasks::id.eq(id.get()))
                    .filter(tasks::user_id.eq(owner.as_str())),
            )
            .set((
                tasks::completed.eq(diesel::dsl::not(tasks::completed)),
                tasks::updated_at.eq(now),
            ))
            .returning(columns!(tasks))
            .get_result::<Row>(conn)
            .await
            .optional()
        })?;
        row.map(|r| into_task(r, owner)).transpose()
    }

    async fn delete(&self, owner: &OwnerId, id: TaskId) -> Result<bool, RepoError> {
        let deleted: usize = with_conn!(self, |conn| {
            diesel::delete(
                tasks::table
                    .filter(tasks::id.eq(id.get()))
                    .filter(tasks::user_id.eq(owner.as_str())),
            )
            .execute(conn)
            .await
        })?;
        Ok(deleted > 0)
    }

    async fn ping(&self) -> Result<(), RepoError> {
        with_conn!(self, |conn| conn.batch_execute("SELECT 1").await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, title: &str) -> Row {
        let t = tasks_domain::now();
        (7, user.to_owned(), title.to_owned(), None, false, t, t)
    }

    #[test]
    fn rows_of_another_owner_are_an_error_not_a_task() {
        let alice = OwnerId::parse("alice").unwrap();
        assert!(into_task(row("alice", "mine"), &alice).is_ok());
        assert!(matches!(
            into_task(row("bob", "theirs"), &alice),
            Err(RepoError::Unexpected(_))
        ));
    }

    #[test]
    fn corrupt_rows_are_an_error() {
        let alice = OwnerId::parse("alice").unwrap();
        assert!(matches!(
            into_task(row("alice", "   "), &alice),
            Err(RepoError::Unexpected(_))
        ));
    }
}
