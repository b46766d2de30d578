//! The pool machinery: the two backends' connection pools, the `with_conn!`
//! macro that runs one query body against either, the query timeout with its
//! server-side cancel, and the disk-full bookkeeping behind `/ready`.
//!
//! Nothing here knows what a task is; the queries are in `lib.rs`.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use diesel::prelude::*;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt as _;
use tasks_ports::RepoError;

use crate::errors::{breaks_connection, is_disk_full, query_error};
use crate::{DatabaseLocation, StoreConfig, pg};

/// Runs `$body` with `$conn` bound to a connection and `tasks` bound to the
/// matching table module, under the store's query timeout.
///
/// `with_conn!(@read $store, [captures], |conn| ...)` runs a read: on
/// PostgreSQL like any query, on SQLite on one of the reader threads
/// (`writer::Readers`), with captures as for writes; `@sqlite_read` is the
/// SQLite half alone. `with_conn!(@pg ...)` runs a body written for
/// PostgreSQL only, for the few statements whose SQL differs.
///
/// `with_conn!(@write $store, [captures], |conn| ...)` runs a write: on
/// PostgreSQL like any query, on SQLite in the next group-commit batch of
/// the writer thread (`writer.rs`), inside its own savepoint, answered once
/// the batch is on disk. The body then runs on another thread, so the
/// variables it borrows are listed in `[captures]` and moved there as owned
/// copies (`writer::Owned`); `@sqlite_write` is the SQLite half alone.
///
/// Its own paths are absolute (`$crate::...`), so a caller imports only what
/// its body names: the queries in `lib.rs` read as queries.
macro_rules! with_conn {
    (@write $store:expr, [$($cap:ident),* $(,)?], |$conn:ident| $body:expr) => {
        $crate::pool::with_conn!(@either sqlite_write, $store, [$($cap),*], |$conn| $body)
    };
    (@read $store:expr, [$($cap:ident),* $(,)?], |$conn:ident| $body:expr) => {
        $crate::pool::with_conn!(@either sqlite_read, $store, [$($cap),*], |$conn| $body)
    };
    (@sqlite_write $store:expr, [$($cap:ident),* $(,)?], |$conn:ident| $body:expr) => {
        $crate::pool::with_conn!(@sqlite sqlite_write, $store, [$($cap),*], |$conn| $body)
    };
    (@sqlite_read $store:expr, [$($cap:ident),* $(,)?], |$conn:ident| $body:expr) => {
        $crate::pool::with_conn!(@sqlite sqlite_read, $store, [$($cap),*], |$conn| $body)
    };
    // PostgreSQL: the pool; SQLite: the thread `$method` sends the body to.
    (@either $method:ident, $store:expr, [$($cap:ident),*], |$conn:ident| $body:expr) => {
        match &$store.backend {
            $crate::pool::Backend::Postgres { pool, tls } => {
                $crate::pool::with_conn!(@pg $store, pool, tls, |$conn| $body)
            }
            $crate::pool::Backend::Sqlite(_) => {
                $crate::pool::with_conn!(@sqlite $method, $store, [$($cap),*], |$conn| $body)
            }
        }
    };
    (@sqlite $method:ident, $store:expr, [$($cap:ident),*], |$conn:ident| $body:expr) => {{
        $( let $cap = $crate::writer::Owned::owned($cap); )*
        let outcome = $store
            .$method(move |$conn: &mut $crate::writer::SqliteConn| {
                #[allow(unused_imports, reason = "a body of raw SQL does not name the table")]
                use $crate::schema::sqlite::tasks;
                $crate::writer::inline_body(async { $body })
            })
            .await;
        $store.settle(outcome)
    }};
    (@pg $store:expr, $pool:ident, $tls:ident, |$conn:ident| $body:expr) => {{
                let (pool, tls) = ($pool, $tls);
                #[allow(unused_imports, reason = "a body of raw SQL does not name the table")]
                use $crate::schema::pg::tasks;
                let mut object = pool.get().await.map_err($crate::errors::pool_error)?;
                let cancel = (object.cancel_token(), tls.clone());
                let outcome = {
                    let conn: &mut diesel_async::AsyncPgConnection = &mut object;
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
                            diesel_async::SimpleAsyncConnection::batch_execute(conn, &$store.begin_pinned)
                                .await?;
                            let result = {
                                let $conn = &mut *conn;
                                $body
                            };
                            match result {
                                Ok(value) => {
                                    diesel_async::SimpleAsyncConnection::batch_execute(conn, "COMMIT")
                                        .await
                                        .map(|()| value)
                                }
                                Err(err) => {
                                    let _ = diesel_async::SimpleAsyncConnection::batch_execute(conn, "ROLLBACK")
                                        .await;
                                    Err(err)
                                }
                            }
                        }
                    };
                    $crate::pool::timed(query, $store.query_timeout, Some(cancel)).await
                };
                $store.finish(object, outcome)
    }};
}
pub(crate) use with_conn;

/// How a timed query ended.
pub(crate) enum Outcome<T> {
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
pub(crate) async fn timed<T>(
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

pub(crate) enum Backend {
    Postgres {
        pool: Pool<AsyncPgConnection>,
        /// For cancel requests, which open a connection of their own.
        tls: tasks_pg::MakeRustlsConnect,
    },
    /// The reader threads (writes go to `DieselTaskStore::writer`).
    Sqlite(crate::writer::Readers),
}

impl Backend {
    /// The backend's name, for the `backend` field of the query spans.
    pub(crate) const fn name(&self) -> &'static str {
        match self {
            Self::Postgres { .. } => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }
}

/// The repository's operations, as the `operation` label names them.
const OPERATIONS: [&str; 13] = [
    "list",
    "get",
    "create",
    "update",
    "toggle",
    "delete",
    "ping",
    "changes",
    "purge_changes",
    "create_idempotent",
    "purge_idempotency_keys",
    "change_head",
    "watch",
];

/// The store's metrics, through the `metrics` facade: the store knows
/// nothing of how (or whether) they are exported. The handles are taken once,
/// when the store is built: with no recorder installed by then they are
/// no-ops, and a query pays no registry lookup either way.
struct StoreMetrics {
    /// `db_query_duration_seconds{operation, backend}`, in `OPERATIONS` order.
    durations: [metrics::Histogram; 13],
    /// `db_query_timeouts_total{backend}`.
    timeouts: metrics::Counter,
}

impl StoreMetrics {
    fn new(backend: &'static str) -> Self {
        Self {
            durations: OPERATIONS.map(|operation| {
                metrics::histogram!(
                    "db_query_duration_seconds",
                    "operation" => operation,
                    "backend" => backend
                )
            }),
            timeouts: metrics::counter!("db_query_timeouts_total", "backend" => backend),
        }
    }
}

/// Records the wall time of one repository call (pool wait included,
/// whatever its outcome) when dropped.
pub(crate) struct QueryTimer<'a> {
    histogram: Option<&'a metrics::Histogram>,
    started: Instant,
}

impl Drop for QueryTimer<'_> {
    fn drop(&mut self) {
        if let Some(histogram) = self.histogram {
            histogram.record(self.started.elapsed().as_secs_f64());
        }
    }
}

/// The connection pool's occupancy, for the pool gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub max_size: usize,
    /// Connections open (idle or in use).
    pub size: usize,
    pub in_use: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
}

/// After the database reports a full disk, `/ready` fails for this long
/// (every further failed write extends it), so a load balancer steers
/// traffic away; it then recovers by itself once writes succeed again.
pub(crate) const DISK_FULL_WINDOW: Duration = Duration::from_secs(30);

/// The Diesel implementation of [`TaskRepository`].
pub struct DieselTaskStore {
    pub(crate) backend: Backend,
    pub(crate) query_timeout: Duration,
    pub(crate) prepared_statements: bool,
    /// `BEGIN` plus the server-side timeouts, for transaction-pooled mode.
    pub(crate) begin_pinned: String,
    /// When a write last failed for lack of disk space.
    disk_full_at: Mutex<Option<Instant>>,
    /// The streaming standby that may serve reads (`DATABASE_READ_URL`).
    pub(crate) replica: Option<Box<crate::replica::Replica>>,
    /// SQLite only: the one writer thread that group-commits every write.
    pub(crate) writer: Option<crate::writer::Writer>,
    metrics: StoreMetrics,
    /// Idempotency keys being claimed in this process (SQLite).
    pub(crate) in_flight: crate::idempotency::InFlight,
}

impl DieselTaskStore {
    /// Builds the connection pool. No connection is opened yet, so the service
    /// can start while the database is still coming up.
    ///
    /// With a read replica configured, it also starts the replica's
    /// background sampler, so it must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// The configuration is invalid (for example an unparseable URL, or a
    /// read replica beside SQLite).
    pub fn connect(config: &StoreConfig) -> anyhow::Result<Self> {
        let mut store = Self::open(config, "DATABASE_URL")?;
        if let Some(read) = &config.read_replica {
            store.replica = Some(Box::new(crate::replica::Replica::start(config, read)?));
        }
        Ok(store)
    }

    /// The pool of one server; `var` names its URL's variable in errors.
    pub(crate) fn open(config: &StoreConfig, var: &str) -> anyhow::Result<Self> {
        let timeouts = deadpool::managed::Timeouts {
            wait: Some(config.connect_timeout),
            create: Some(config.connect_timeout),
            recycle: Some(config.connect_timeout),
        };
        let mut writer = None;
        let backend = match &config.location {
            DatabaseLocation::Postgres(url) => {
                let connector = pg::PgConnector::for_var(url, var, config.connect_timeout)?;
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
                let sqlite = |queue| crate::writer::WriterConfig {
                    path: path.to_string_lossy().into_owned(),
                    busy_ms,
                    queue,
                };
                writer = Some(
                    crate::writer::Writer::start(sqlite(config.write_queue))
                        .context("starting the SQLite writer thread")?,
                );
                // `DATABASE_POOL_SIZE` reader threads, and as many reads
                // waiting at most.
                let readers =
                    crate::writer::Readers::start(sqlite(config.pool_size), config.pool_size)
                        .context("starting the SQLite reader threads")?;
                Backend::Sqlite(readers)
            }
        };
        Ok(Self {
            query_timeout: config.query_timeout,
            prepared_statements: config.prepared_statements,
            begin_pinned: format!(
                "BEGIN; {}",
                server_timeouts("SET LOCAL", config.query_timeout)
            ),
            disk_full_at: Mutex::new(None),
            replica: None,
            writer,
            metrics: StoreMetrics::new(backend.name()),
            in_flight: crate::idempotency::InFlight::default(),
            backend,
        })
    }

    /// Settles a timed query. A connection is taken out of the pool and
    /// closed only when its state is unknown: it failed at the connection
    /// level, or its query ran out of time and did not end when cancelled.
    /// A full disk is remembered for `/ready`.
    pub(crate) fn finish<M: deadpool::managed::Manager, T>(
        &self,
        object: deadpool::managed::Object<M>,
        outcome: Outcome<T>,
    ) -> Result<T, RepoError> {
        let discard = match &outcome {
            Outcome::Done(Ok(_)) => false,
            Outcome::Done(Err(err)) => breaks_connection(err),
            Outcome::TimedOut { settled } => !settled,
        };
        if discard {
            drop(deadpool::managed::Object::take(object));
        }
        self.settle(outcome)
    }

    /// Turns a query's outcome into the port's result, counting timeouts and
    /// remembering a full disk (`finish` without a pooled connection: the
    /// SQLite writer keeps its own).
    pub(crate) fn settle<T>(&self, outcome: Outcome<T>) -> Result<T, RepoError> {
        match outcome {
            Outcome::Done(Ok(value)) => Ok(value),
            Outcome::Done(Err(err)) => {
                if is_disk_full(&err) {
                    self.note_disk_full();
                }
                Err(query_error(err))
            }
            Outcome::TimedOut { .. } => {
                self.metrics.timeouts.increment(1);
                Err(RepoError::Unavailable(anyhow::anyhow!(
                    "query did not finish within the query timeout"
                )))
            }
        }
    }

    /// Runs an SQLite write in the writer's next batch (see `writer.rs`).
    pub(crate) async fn sqlite_write<T, F>(&self, work: F) -> Outcome<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut crate::writer::SqliteConn) -> QueryResult<T> + Send + 'static,
    {
        match &self.writer {
            Some(writer) => writer.write(self.query_timeout, work).await,
            None => Outcome::Done(Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UnableToSendCommand,
                Box::new("no SQLite writer on this store".to_owned()),
            ))),
        }
    }

    /// Runs an SQLite read on a reader thread (see `writer::Readers`).
    pub(crate) async fn sqlite_read<T, F>(&self, work: F) -> Outcome<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut crate::writer::SqliteConn) -> QueryResult<T> + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(readers) => readers.read(self.query_timeout, work).await,
            Backend::Postgres { .. } => Outcome::Done(Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UnableToSendCommand,
                Box::new("no SQLite readers on this store".to_owned()),
            ))),
        }
    }

    fn note_disk_full(&self) {
        if let Ok(mut at) = self.disk_full_at.lock() {
            *at = Some(Instant::now());
        }
    }

    /// A write went through: whatever filled the disk is over.
    pub(crate) fn note_write(&self) {
        if let Ok(mut at) = self.disk_full_at.lock() {
            *at = None;
        }
    }

    pub(crate) fn disk_recently_full(&self) -> bool {
        self.disk_full_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < DISK_FULL_WINDOW)
    }

    /// Connections currently open and idle, for diagnostics.
    #[must_use]
    pub fn pool_status(&self) -> (usize, usize) {
        let s = self.pool_stats();
        (s.size, s.size.saturating_sub(s.in_use))
    }

    /// The pool's occupancy right now.
    #[must_use]
    pub fn pool_stats(&self) -> PoolStats {
        match &self.backend {
            Backend::Postgres { pool: p, .. } => {
                let s = p.status();
                PoolStats {
                    max_size: s.max_size,
                    size: s.size,
                    in_use: s.size.saturating_sub(s.available),
                    waiting: s.waiting,
                }
            }
            // The reader threads (the writer's connection is not counted).
            Backend::Sqlite(readers) => {
                let (max_size, size, in_use, waiting) = readers.stats();
                PoolStats {
                    max_size,
                    size,
                    in_use,
                    waiting,
                }
            }
        }
    }

    /// The backend's name: `postgres` or `sqlite`.
    #[must_use]
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Starts timing one repository call named `operation` (one of
    /// `OPERATIONS`).
    pub(crate) fn timer(&self, operation: &'static str) -> QueryTimer<'_> {
        let index = OPERATIONS.iter().position(|o| *o == operation);
        QueryTimer {
            histogram: index.map(|i| &self.metrics.durations[i]),
            started: Instant::now(),
        }
    }

    /// Closes every connection; later calls fail as `Unavailable`.
    pub fn close(&self) {
        if let Some(replica) = &self.replica {
            replica.close();
        }
        if let Some(writer) = &self.writer {
            writer.close();
        }
        match &self.backend {
            Backend::Postgres { pool: p, .. } => p.close(),
            Backend::Sqlite(readers) => readers.close(),
        }
    }
}

/// `SET` (or `SET LOCAL`) of the server-side statement and lock timeouts.
fn server_timeouts(set: &str, timeout: Duration) -> String {
    let ms = timeout.as_millis().max(1);
    format!("{set} statement_timeout = {ms}; {set} lock_timeout = {ms};")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timeouts_are_milliseconds() {
        assert_eq!(
            server_timeouts("SET LOCAL", Duration::from_millis(1500)),
            "SET LOCAL statement_timeout = 1500; SET LOCAL lock_timeout = 1500;"
        );
    }
}
