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

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

use errors::{breaks_connection, is_disk_full, pool_error, query_error};

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
///
/// `with_conn!(@pg ...)` and `with_conn!(@sqlite ...)` run a body written for
/// one backend only, for the few statements whose SQL differs.
macro_rules! with_conn {
    ($store:expr, |$conn:ident| $body:expr) => {
        match &$store.backend {
            Backend::Postgres { pool, tls } => with_conn!(@pg $store, pool, tls, |$conn| $body),
            Backend::Sqlite(pool) => with_conn!(@sqlite $store, pool, |$conn| $body),
        }
    };
    (@pg $store:expr, $pool:ident, $tls:ident, |$conn:ident| $body:expr) => {{
                let (pool, tls) = ($pool, $tls);
                #[allow(unused_imports)]
                use crate::schema::pg::tasks;
                let mut object = pool.get().await.map_err(pool_error)?;
                let cancel = (object.cancel_token(), tls.clone());
                let outcome = {
                    let conn: &mut AsyncPgConnection = &mut object;
                    let query = async {
                        if $store.prepared_statements {
                            let $conn = conn;
                            $body
                        } else {
                            // Behind a transaction-pooling PgBouncer, prepare,
                            // execute and close must reach the same server, and
                            // session settings do not stick: one explicit
                            // transaction pins a server and carries the
                            // server-side timeouts, in the round trip that
                            // opens it.
                            conn.batch_execute(&$store.begin_pinned).await?;
                            let result = {
                                let $conn = &mut *conn;
                                $body
                            };
                            match result {
                                Ok(value) => conn.batch_execute("COMMIT").await.map(|()| value),
                                Err(err) => {
                                    let _ = conn.batch_execute("ROLLBACK").await;
                                    Err(err)
                                }
                            }
                        }
                    };
                    timed(query, $store.query_timeout, Some(cancel)).await
                };
                $store.finish(object, outcome)
    }};
    (@sqlite $store:expr, $pool:ident, |$conn:ident| $body:expr) => {{
                let pool = $pool;
                #[allow(unused_imports)]
                use crate::schema::sqlite::tasks;
                let mut object = pool.get().await.map_err(pool_error)?;
                let outcome = {
                    let $conn: &mut SqliteConn = &mut object;
                    timed(async { $body }, $store.query_timeout, None).await
                };
                $store.finish(object, outcome)
    }};
}

/// How a timed query ended.
enum Outcome<T> {
    Done(QueryResult<T>),
    /// It ran out of time. `settled` says whether it then ended (after the
    /// server was asked to cancel it), leaving the connection idle.
    TimedOut {
        settled: bool,
    },
}

/// How long a timed-out query gets to report its cancellation.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Runs `query` for at most `timeout`. On PostgreSQL a query that runs out
/// of time is cancelled on the server (a dropped connection alone leaves the
/// backend running, for instance waiting on a lock, while the pool opens a
/// new one: backends pile up until `max_connections` refuses everyone), and
/// is then given a moment to end, so that its connection can be reused
/// rather than replaced.
async fn timed<T>(
    query: impl Future<Output = QueryResult<T>>,
    timeout: Duration,
    cancel: Option<(tokio_postgres::CancelToken, tasks_pg::MakeRustlsConnect)>,
) -> Outcome<T> {
    let mut query = std::pin::pin!(query);
    if let Ok(result) = tokio::time::timeout(timeout, &mut query).await {
        return Outcome::Done(result);
    }
    let Some((token, tls)) = cancel else {
        return Outcome::TimedOut { settled: false };
    };
    match tokio::time::timeout(CANCEL_GRACE, token.cancel_query(tls)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not cancel a timed-out query"),
        Err(_) => tracing::warn!("cancelling a timed-out query timed out"),
    }
    let settled = tokio::time::timeout(CANCEL_GRACE, &mut query).await.is_ok();
    Outcome::TimedOut { settled }
}

enum Backend {
    Postgres {
        pool: Pool<AsyncPgConnection>,
        /// For cancel requests, which open a connection of their own.
        tls: tasks_pg::MakeRustlsConnect,
    },
    Sqlite(Pool<SqliteConn>),
}

/// After the database reports a full disk, `/ready` fails for this long
/// (every further failed write extends it), so a load balancer steers
/// traffic away; it then recovers by itself once writes succeed again.
const DISK_FULL_WINDOW: Duration = Duration::from_secs(30);

/// The Diesel implementation of [`TaskRepository`].
pub struct DieselTaskStore {
    backend: Backend,
    query_timeout: Duration,
    prepared_statements: bool,
    /// `BEGIN` plus the server-side timeouts, for transaction-pooled mode.
    begin_pinned: String,
    /// When a write last failed for lack of disk space.
    disk_full_at: Mutex<Option<Instant>>,
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
                let tls = connector.tls();
                let prepared = config.prepared_statements;
                let session_timeouts = server_timeouts("SET", config.query_timeout);
                let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
                // A checkout checks that the socket is open and no transaction
                // is left over, without a `SELECT 1` round trip per request;
                // connections that fail mid-query are discarded in `finish`.
                manager_config.recycling_method = RecyclingMethod::Fast;
                manager_config.custom_setup = Box::new(move |_url| {
                    let connector = connector.clone();
                    let session_timeouts = session_timeouts.clone();
                    async move {
                        let mut conn = if prepared {
                            connector.connect().await?
                        } else {
                            connector.connect_pooled().await?
                        };
                        if prepared {
                            // The server stops a statement at the query
                            // timeout by itself too, whatever happens to
                            // this client.
                            conn.batch_execute(&session_timeouts)
                                .await
                                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                        } else {
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
                Backend::Postgres { pool, tls }
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
            begin_pinned: format!(
                "BEGIN; {}",
                server_timeouts("SET LOCAL", config.query_timeout)
            ),
            disk_full_at: Mutex::new(None),
        })
    }

    /// Settles a timed query. A connection is taken out of the pool and
    /// closed only when its state is unknown: it failed at the connection
    /// level, or its query ran out of time and did not end when cancelled.
    /// A full disk is remembered for `/ready`.
    fn finish<M: deadpool::managed::Manager, T>(
        &self,
        object: deadpool::managed::Object<M>,
        outcome: Outcome<T>,
    ) -> Result<T, RepoError> {
        match outcome {
            Outcome::Done(Ok(value)) => Ok(value),
            Outcome::Done(Err(err)) => {
                if breaks_connection(&err) {
                    drop(deadpool::managed::Object::take(object));
                }
                if is_disk_full(&err) {
                    self.note_disk_full();
                }
                Err(query_error(err))
            }
            Outcome::TimedOut { settled } => {
                if !settled {
                    drop(deadpool::managed::Object::take(object));
                }
                Err(RepoError::Unavailable(anyhow::anyhow!(
                    "query did not finish within the query timeout"
                )))
            }
        }
    }

    fn note_disk_full(&self) {
        if let Ok(mut at) = self.disk_full_at.lock() {
            *at = Some(Instant::now());
        }
    }

    /// A write went through: whatever filled the disk is over.
    fn note_write(&self) {
        if let Ok(mut at) = self.disk_full_at.lock() {
            *at = None;
        }
    }

    fn disk_recently_full(&self) -> bool {
        self.disk_full_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < DISK_FULL_WINDOW)
    }

    /// Connections currently open and idle, for diagnostics.
    #[must_use]
    pub fn pool_status(&self) -> (usize, usize) {
        let s = match &self.backend {
            Backend::Postgres { pool: p, .. } => p.status(),
            Backend::Sqlite(p) => p.status(),
        };
        (s.size, s.available)
    }

    /// Closes every connection; later calls fail as `Unavailable`.
    pub fn close(&self) {
        match &self.backend {
            Backend::Postgres { pool: p, .. } => p.close(),
            Backend::Sqlite(p) => p.close(),
        }
    }
}

/// `SET` (or `SET LOCAL`) of the server-side statement and lock timeouts.
fn server_timeouts(set: &str, timeout: Duration) -> String {
    let ms = timeout.as_millis().max(1);
    format!("{set} statement_timeout = {ms}; {set} lock_timeout = {ms};")
}

/// Converts a row selected for `owner`. The query already filtered by owner;
/// comparing again (instead of re-parsing the id) is cheap and turns a
/// mis-written query into an error rather than a leak.
///
/// A stored title or description that today's rules reject (written behind
/// the service's back, or under an older release's rules) is logged with the
/// task id and served as stored: one odd row must not fail the whole list,
/// and the user can still see, fix or delete it.
fn into_task(row: Row, owner: &OwnerId) -> Result<Task, RepoError> {
    let (id, user_id, title, description, completed, created_at, updated_at) = row;
    if user_id != owner.as_str() {
        return Err(RepoError::Unexpected(anyhow::anyhow!(
            "task {id}: a query for one owner returned another owner's row"
        )));
    }
    let odd = |what: &str| {
        tracing::warn!(
            task_id = id,
            "stored {what} does not meet the current rules; served as stored"
        );
    };
    let title = match Title::parse(&title) {
        Ok(parsed) if parsed.as_str() == title => parsed,
        _ => {
            odd("title");
            Title::from_storage(title)
        }
    };
    let description = description.map(|d| match Description::parse(d.clone()) {
        Ok(parsed) => parsed,
        Err(_) => {
            odd("description");
            Description::from_storage(d)
        }
    });
    Ok(Task {
        id: TaskId::new(id),
        owner: owner.clone(),
        title,
        description,
        completed,
        created_at,
        updated_at,
    })
}

fn into_tasks(rows: Vec<Row>, owner: &OwnerId) -> Result<Vec<Task>, RepoError> {
    rows.into_iter().map(|row| into_task(row, owner)).collect()
}

/// A row of `RETURNING` from the raw statements (create), per backend: the
/// timestamps' SQL types differ.
macro_rules! returned_row {
    ($name:ident, $ts:ty) => {
        #[derive(diesel::QueryableByName)]
        struct $name {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            id: i64,
            #[diesel(sql_type = diesel::sql_types::Text)]
            user_id: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            title: String,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            description: Option<String>,
            #[diesel(sql_type = diesel::sql_types::Bool)]
            completed: bool,
            #[diesel(sql_type = $ts)]
            created_at: DateTime<Utc>,
            #[diesel(sql_type = $ts)]
            updated_at: DateTime<Utc>,
        }

        impl From<$name> for Row {
            fn from(r: $name) -> Row {
                (
                    r.id,
                    r.user_id,
                    r.title,
                    r.description,
                    r.completed,
                    r.created_at,
                    r.updated_at,
                )
            }
        }
    };
}
returned_row!(PgReturned, diesel::sql_types::Timestamptz);
returned_row!(SqliteReturned, diesel::sql_types::TimestamptzSqlite);

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Creates a task only while its owner holds fewer than the limit. The
/// owner's row in `task_counts` is bumped by an upsert whose `WHERE` sees the
/// latest committed count under the row lock, in the same statement as the
/// insert: concurrent creates cannot overshoot the limit.
const PG_CREATE: &str = "WITH slot AS (
    INSERT INTO task_counts AS c (user_id, tasks) VALUES ($1, 1)
    ON CONFLICT (user_id) DO UPDATE SET tasks = c.tasks + 1 WHERE c.tasks < $2
    RETURNING 1)
INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at)
SELECT $1, $3, $4, FALSE, $5, $5 FROM slot
RETURNING id, user_id, title, description, completed, created_at, updated_at";

/// SQLite runs one writer at a time and a write statement takes the write
/// lock before it reads, so the count it checks cannot change under it.
const SQLITE_CREATE: &str =
    "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at)
SELECT ?1, ?3, ?4, 0, ?5, ?5
WHERE (SELECT count(*) FROM tasks WHERE user_id = ?1) < ?2
RETURNING id, user_id, title, description, completed, created_at, updated_at";

/// Deletes a task and gives its slot back to its owner, in one statement.
const PG_DELETE: &str = "WITH gone AS (
    DELETE FROM tasks WHERE id = $1 AND user_id = $2 RETURNING user_id),
freed AS (
    UPDATE task_counts SET tasks = GREATEST(tasks - 1, 0)
    FROM gone WHERE task_counts.user_id = gone.user_id RETURNING 1)
SELECT count(*) AS n FROM gone";

#[async_trait]
impl TaskRepository for DieselTaskStore {
    async fn list(
        &self,
        owner: &OwnerId,
        filter: StatusFilter,
        before: Option<TaskId>,
        limit: usize,
    ) -> Result<Vec<Task>, RepoError> {
        // `id <= before - 1` rather than an optional `id < before`: one
        // statement shape per filter, each a cached prepared statement.
        let up_to = before.map_or(i64::MAX, |id| id.get() - 1);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<Row> = with_conn!(self, |conn| {
            let mine = tasks::table
                .filter(tasks::user_id.eq(owner.as_str()))
                .filter(tasks::id.le(up_to))
                .select(columns!(tasks))
                .order(tasks::id.desc())
                .limit(limit);
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

    async fn create(
        &self,
        owner: &OwnerId,
        task: NewTask,
        max_tasks: u32,
    ) -> Result<Option<Task>, RepoError> {
        use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, TimestamptzSqlite};
        let now = tasks_domain::now();
        let title = task.title.as_str();
        let description = task.description.as_ref().map(Description::as_str);
        let limit = i64::from(max_tasks);
        let row: Option<Row> = match &self.backend {
            Backend::Postgres { pool, tls } => with_conn!(@pg self, pool, tls, |conn| {
                diesel::sql_query(PG_CREATE)
                    .bind::<Text, _>(owner.as_str())
                    .bind::<BigInt, _>(limit)
                    .bind::<Text, _>(title)
                    .bind::<Nullable<Text>, _>(description)
                    .bind::<Timestamptz, _>(now)
                    .get_result::<PgReturned>(conn)
                    .await
                    .optional()
            })?
            .map(Row::from),
            Backend::Sqlite(pool) => with_conn!(@sqlite self, pool, |conn| {
                diesel::sql_query(SQLITE_CREATE)
                    .bind::<Text, _>(owner.as_str())
                    .bind::<BigInt, _>(limit)
                    .bind::<Text, _>(title)
                    .bind::<Nullable<Text>, _>(description)
                    .bind::<TimestamptzSqlite, _>(now)
                    .get_result::<SqliteReturned>(conn)
                    .await
                    .optional()
            })?
            .map(Row::from),
        };
        self.note_write();
        row.map(|r| into_task(r, owner)).transpose()
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
        self.note_write();
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
        self.note_write();
        row.map(|r| into_task(r, owner)).transpose()
    }

    async fn delete(&self, owner: &OwnerId, id: TaskId) -> Result<bool, RepoError> {
        use diesel::sql_types::{BigInt, Text};
        let deleted: i64 = match &self.backend {
            Backend::Postgres { pool, tls } => {
                with_conn!(@pg self, pool, tls, |conn| {
                    diesel::sql_query(PG_DELETE)
                        .bind::<BigInt, _>(id.get())
                        .bind::<Text, _>(owner.as_str())
                        .get_result::<Count>(conn)
                        .await
                })?
                .n
            }
            Backend::Sqlite(pool) => {
                let n: usize = with_conn!(@sqlite self, pool, |conn| {
                    diesel::delete(
                        tasks::table
                            .filter(tasks::id.eq(id.get()))
                            .filter(tasks::user_id.eq(owner.as_str())),
                    )
                    .execute(conn)
                    .await
                })?;
                i64::try_from(n).unwrap_or(i64::MAX)
            }
        };
        self.note_write();
        Ok(deleted > 0)
    }

    async fn ping(&self) -> Result<(), RepoError> {
        if self.disk_recently_full() {
            return Err(RepoError::Unavailable(anyhow::anyhow!(
                "the database reported a full disk in the last {} s",
                DISK_FULL_WINDOW.as_secs()
            )));
        }
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
    fn rows_that_break_todays_rules_are_served_as_stored() {
        let alice = OwnerId::parse("alice").unwrap();
        let task = into_task(row("alice", "   "), &alice).unwrap();
        assert_eq!(task.title.as_str(), "   ");
        let task = into_task(row("alice", " padded "), &alice).unwrap();
        assert_eq!(task.title.as_str(), " padded ");
    }

    #[test]
    fn server_timeouts_are_milliseconds() {
        assert_eq!(
            server_timeouts("SET LOCAL", Duration::from_millis(1500)),
            "SET LOCAL statement_timeout = 1500; SET LOCAL lock_timeout = 1500;"
        );
    }
}
