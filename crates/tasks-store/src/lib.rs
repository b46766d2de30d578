//! The Diesel adapter of the [`TaskRepository`] port.
//!
//! One store, two backends: PostgreSQL through diesel-async and deadpool (the
//! production path, no libpq) and an embedded SQLite file through diesel's
//! synchronous connection wrapped for async (the zero-setup default). Every
//! query is written once: the `with_conn!` macro runs the same body against
//! whichever pool the store holds, with `tasks` bound to that backend's table.
//!
//! Ownership is part of every `WHERE` clause; toggles and updates are single
//! `UPDATE ... RETURNING` statements, so each request is one round trip and
//! concurrent toggles never lose one another.
//!
//! This file is the repository: the queries, then the SQL that differs per
//! backend; idempotent creates (`Idempotency-Key`) are in `idempotency.rs`.
//! The machinery they run on is in `pool.rs` (pools, `with_conn!`,
//! timeouts and cancel, disk-full bookkeeping) and `rows.rs` (the column list
//! and the row-to-`Task` mapping).
//!
//! Each repository method runs in a `debug` span named after it (`db.list`,
//! `db.get`, `db.create`, `db.create_idempotent`, `db.update`, `db.toggle`,
//! `db.delete`, `db.ping`, `db.changes`, `db.change_head`, `db.watch`,
//! `db.purge_changes`, `db.purge_idempotency_keys`),
//! so database time (pool wait included) is a span of its own, apart from the
//! handler's. Their fields are the backend, task ids, the status filter and
//! the batch limit; never task text and never the owner (`skip_all`, then
//! named fields only). At the default `info` level they are disabled at the call site: a
//! level check, about 8 ns a call measured against a SQLite `get` of 40 to
//! 80 µs (about 0.6 µs when enabled with the JSON log format).
//!
//! Each method also records its wall time in the `metrics` histogram
//! `db_query_duration_seconds{operation, backend}` (see `pool::StoreMetrics`);
//! without a recorder installed before the store is built, a no-op.

mod changes;
mod config;
mod errors;
mod idempotency;
mod migrate;
mod pg;
mod pool;
mod replica;
mod rows;
mod schema;
mod statements;
mod timestamps;
mod writer;

use async_trait::async_trait;
use diesel::IntoSql as _;
use diesel::prelude::*;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use tasks_domain::{Description, NewTask, OwnerId, StatusFilter, Task, TaskId, TaskPatch, Title};
use tasks_ports::{
    Changes, IdempotencyKey, IdempotentCreate, Precondition, RepoError, TaskRepository, Written,
};

pub use changes::{ChangeRetention, PURGE_OWNERS_PER_ROUND, WATCH_BATCH};
pub use config::{DatabaseLocation, ReadReplicaConfig, StoreConfig, redact_url};
pub use migrate::run_migrations;
pub use pool::{DieselTaskStore, PoolStats};

use pool::{Backend, DISK_FULL_WINDOW, with_conn};
use rows::{Row, columns, into_task, into_tasks, owned_if_current};

#[async_trait]
impl TaskRepository for DieselTaskStore {
    #[tracing::instrument(
        level = "debug",
        name = "db.list",
        skip_all,
        fields(backend = self.backend.name(), status = ?filter, before = before.map(TaskId::get), limit = limit)
    )]
    async fn list(
        &self,
        owner: &OwnerId,
        filter: StatusFilter,
        before: Option<TaskId>,
        limit: usize,
    ) -> Result<Vec<Task>, RepoError> {
        if let Some(replica) = self.replica.as_ref().filter(|r| r.serves(owner)) {
            match replica.store.list_here(owner, filter, before, limit).await {
                Ok(tasks) => return Ok(tasks),
                Err(e) => replica.failed(&e),
            }
        }
        self.list_here(owner, filter, before, limit).await
    }

    #[tracing::instrument(
        level = "debug",
        name = "db.get",
        skip_all,
        fields(backend = self.backend.name(), task_id = id.get())
    )]
    async fn get(&self, owner: &OwnerId, id: TaskId) -> Result<Option<Task>, RepoError> {
        if let Some(replica) = self.replica.as_ref().filter(|r| r.serves(owner)) {
            match replica.store.get_here(owner, id).await {
                Ok(task) => return Ok(task),
                Err(e) => replica.failed(&e),
            }
        }
        self.get_here(owner, id).await
    }

    #[tracing::instrument(
        level = "debug",
        name = "db.create",
        skip_all,
        fields(backend = self.backend.name(), max_tasks = max_tasks, task_id = tracing::field::Empty)
    )]
    async fn create(
        &self,
        owner: &OwnerId,
        task: NewTask,
        max_tasks: u32,
    ) -> Result<Option<Task>, RepoError> {
        let _writing = self.writing(owner);
        let _timer = self.timer("create");
        let now = tasks_domain::now();
        let title = task.title.as_str();
        let description = task.description.as_ref().map(Description::as_str);
        let limit = i64::from(max_tasks);
        let row: Option<Row> = match &self.backend {
            Backend::Postgres { pool, tls } => with_conn!(@pg self, pool, tls, |conn| {
                statements::PgCreate {
                    owner: owner.as_str(),
                    limit,
                    title,
                    description,
                    now,
                }
                .get_result::<Row>(conn)
                .await
                .optional()
            })?,
            Backend::Sqlite(_) => {
                with_conn!(@sqlite_write self, [owner, title, description], |conn| {
                    statements::SqliteCreate {
                        owner: owner.as_str(),
                        limit,
                        title: &title,
                        description: description.as_deref(),
                        now,
                    }
                    .get_result::<statements::SqliteRow>(conn)
                    .await
                    .optional()
                })?
                .map(statements::into_row)
            }
        };
        self.note_write();
        if let Some(row) = &row {
            tracing::Span::current().record("task_id", row.0);
        }
        row.map(|r| into_task(r, owner)).transpose()
    }

    #[tracing::instrument(
        level = "debug",
        name = "db.create_idempotent",
        skip_all,
        fields(backend = self.backend.name(), max_tasks = max_tasks)
    )]
    async fn create_idempotent(
        &self,
        owner: &OwnerId,
        task: NewTask,
        max_tasks: u32,
        key: IdempotencyKey<'_>,
    ) -> Result<IdempotentCreate, RepoError> {
        let _writing = self.writing(owner);
        let _timer = self.timer("create_idempotent");
        self.create_keyed(owner, task, max_tasks, key).await
    }

    #[tracing::instrument(
        level = "debug",
        name = "db.purge_idempotency_keys",
        skip_all,
        fields(backend = self.backend.name(), limit = limit)
    )]
    async fn purge_expired_idempotency_keys(&self, limit: u32) -> Result<u64, RepoError> {
        let _timer = self.timer("purge_idempotency_keys");
        self.purge_keys(limit).await
    }

    #[tracing::instrument(
        level = "debug",
        name = "db.update",
        skip_all,
        fields(backend = self.backend.name(), task_id = id.get())
    )]
    async fn update(
        &self,
        owner: &OwnerId,
        id: TaskId,
        patch: TaskPatch,
        expected: Option<Precondition<'_>>,
    ) -> Result<Written<Task>, RepoError> {
        let (accepted, unconditional) = precondition(expected);
        let _writing = self.writing(owner);
        let _timer = self.timer("update");
        let now = tasks_domain::now();
        let title = patch.title.as_ref().map(Title::as_str);
        let description = patch
            .description
            .as_ref()
            .map(|d| d.as_ref().map(Description::as_str));
        let row: Option<Row> = with_conn!(@write self, [owner, title, description], |conn| {
            diesel::update(owned_if_current!(tasks, id, owner, accepted, unconditional))
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
        self.written(owner, id, expected, row).await
    }

    #[tracing::instrument(
        level = "debug",
        name = "db.toggle",
        skip_all,
        fields(backend = self.backend.name(), task_id = id.get())
    )]
    async fn toggle(
        &self,
        owner: &OwnerId,
        id: TaskId,
        expected: Option<Precondition<'_>>,
    ) -> Result<Written<Task>, RepoError> {
        let (accepted, unconditional) = precondition(expected);
        let _writing = self.writing(owner);
        let _timer = self.timer("toggle");
        let now = tasks_domain::now();
        let row: Option<Row> = with_conn!(@write self, [owner], |conn| {
            diesel::update(owned_if_current!(tasks, id, owner, accepted, unconditional))
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
        self.written(owner, id, expected, row).await
    }

    #[tracing::instrument(
        level = "debug",
        name = "db.delete",
        skip_all,
        fields(backend = self.backend.name(), task_id = id.get())
    )]
    async fn delete(
        &self,
        owner: &OwnerId,
        id: TaskId,
        expected: Option<Precondition<'_>>,
    ) -> Result<Written<()>, RepoError> {
        let (accepted, unconditional) = precondition(expected);
        let _writing = self.writing(owner);
        let _timer = self.timer("delete");
        let deleted: i64 = match &self.backend {
            Backend::Postgres { pool, tls } => with_conn!(@pg self, pool, tls, |conn| {
                statements::PgDelete {
                    id: id.get(),
                    owner: owner.as_str(),
                    accepted: &accepted,
                    unconditional,
                }
                .get_result::<i64>(conn)
                .await
            })?,
            Backend::Sqlite(_) => {
                let n: usize = with_conn!(@sqlite_write self, [owner], |conn| {
                    diesel::delete(owned_if_current!(
                        tasks,
                        id,
                        owner,
                        &accepted,
                        unconditional
                    ))
                    .execute(conn)
                    .await
                })?;
                i64::try_from(n).unwrap_or(i64::MAX)
            }
        };
        self.note_write();
        let row = (deleted > 0).then_some(());
        self.written(owner, id, expected, row).await
    }

    #[tracing::instrument(
        level = "debug",
        name = "db.changes",
        skip_all,
        fields(backend = self.backend.name(), since = since, limit = limit)
    )]
    async fn changes(
        &self,
        owner: &OwnerId,
        since: i64,
        limit: usize,
    ) -> Result<Changes, RepoError> {
        self.changes_here(owner, since, limit).await
    }

    #[tracing::instrument(
        level = "debug",
        name = "db.change_head",
        skip_all,
        fields(backend = self.backend.name())
    )]
    async fn change_head(&self, owner: &OwnerId) -> Result<i64, RepoError> {
        let _timer = self.timer("change_head");
        // One index lookup (task_sync's primary key); 0 for an owner who
        // never wrote.
        let head: rows::Count = with_conn!(@read self, [owner], |conn| {
            diesel::sql_query(
                "SELECT coalesce(max(version), 0) AS n FROM task_sync WHERE user_id = $1",
            )
            .bind::<diesel::sql_types::Text, _>(owner.as_str())
            .get_result(conn)
            .await
        })?;
        Ok(head.n)
    }

    #[tracing::instrument(
        level = "debug",
        name = "db.watch",
        skip_all,
        fields(backend = self.backend.name(), owners = owners.len())
    )]
    async fn watch(&self, owners: &[OwnerId], ttl: std::time::Duration) -> Result<(), RepoError> {
        if owners.is_empty() {
            return Ok(());
        }
        self.watch_here(owners, ttl).await
    }

    #[tracing::instrument(
        level = "debug",
        name = "db.ping",
        skip_all,
        fields(backend = self.backend.name())
    )]
    async fn ping(&self) -> Result<(), RepoError> {
        let _timer = self.timer("ping");
        if self.disk_recently_full() {
            return Err(RepoError::Unavailable(anyhow::anyhow!(
                "the database reported a full disk in the last {} s",
                DISK_FULL_WINDOW.as_secs()
            )));
        }
        with_conn!(@read self, [], |conn| conn.batch_execute("SELECT 1").await)
    }
}

/// The reads, on whichever server `self` is (the primary, or the replica's
/// own store); the trait methods above choose.
impl DieselTaskStore {
    async fn list_here(
        &self,
        owner: &OwnerId,
        filter: StatusFilter,
        before: Option<TaskId>,
        limit: usize,
    ) -> Result<Vec<Task>, RepoError> {
        let _timer = self.timer("list");
        // `id <= before - 1` rather than an optional `id < before`: one
        // statement shape per filter, each a cached prepared statement.
        let up_to = before.map_or(i64::MAX, |id| id.get() - 1);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<Row> = match &self.backend {
            Backend::Postgres { pool, tls } => with_conn!(@pg self, pool, tls, |conn| {
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
            })?,
            Backend::Sqlite(_) => {
                let completed = filter.completed();
                let owner_id = owner.as_str().to_owned();
                let rows = with_conn!(@sqlite_read self, [], |conn| {
                    // diesel's own `load` on the plain connection (inline, on
                    // the reader thread): each row is read straight from the
                    // statement, without the wrapper's owned copy of it.
                    conn.spawn_blocking(move |c| {
                        statements::list(c, &owner_id, up_to, limit, completed)
                    })
                    .await
                })?;
                rows.into_iter().map(statements::into_row).collect()
            }
        };
        into_tasks(rows, owner)
    }

    async fn get_here(&self, owner: &OwnerId, id: TaskId) -> Result<Option<Task>, RepoError> {
        let _timer = self.timer("get");
        let row: Option<Row> = match &self.backend {
            Backend::Postgres { pool, tls } => with_conn!(@pg self, pool, tls, |conn| {
                tasks::table
                    .filter(tasks::id.eq(id.get()))
                    .filter(tasks::user_id.eq(owner.as_str()))
                    .select(columns!(tasks))
                    .first::<Row>(conn)
                    .await
                    .optional()
            })?,
            Backend::Sqlite(readers) => {
                // Here, on this thread's own connection (`PointReads`), or
                // else as the list: on a reader's plain connection.
                let here = readers
                    .points
                    .read(|c| statements::get(c, owner.as_str(), id.get()));
                let row = match here {
                    Some(result) => self.settle(pool::Outcome::Done(result))?,
                    None => {
                        let owner_id = owner.as_str().to_owned();
                        with_conn!(@sqlite_read self, [], |conn| {
                            conn.spawn_blocking(move |c| statements::get(c, &owner_id, id.get()))
                                .await
                        })?
                    }
                };
                row.map(statements::into_row)
            }
        };
        row.map(|r| into_task(r, owner)).transpose()
    }

    /// The outcome of a write that returned `row` (or nothing). When a
    /// conditional write changed nothing, one more read on the primary tells
    /// "precondition failed" from "not found"; nothing was written either
    /// way, so this read needs no atomicity with the write (a task deleted in
    /// between is reported as not found, which is also true).
    async fn written<R, T>(
        &self,
        owner: &OwnerId,
        id: TaskId,
        expected: Option<Precondition<'_>>,
        row: Option<R>,
    ) -> Result<Written<T>, RepoError>
    where
        R: WrittenRow<T>,
    {
        match row {
            Some(row) => Ok(Written::Done(row.into_written(owner)?)),
            None if expected.is_some() && self.get_here(owner, id).await?.is_some() => {
                Ok(Written::PreconditionFailed)
            }
            None => Ok(Written::NotFound),
        }
    }

    /// Held for the whole of a write: its drop records the write's end for
    /// the replica's read-your-writes, on every path out (success, error,
    /// or the request dropped mid-query, when the write may still commit).
    fn writing<'a>(&'a self, owner: &'a OwnerId) -> Writing<'a> {
        Writing {
            replica: self.replica.as_deref(),
            owner,
        }
    }
}

/// The `updated_at` values a write accepts and whether it is unconditional:
/// `updated_at = ANY(accepted) OR unconditional`, one statement shape for
/// both cases.
fn precondition(expected: Option<Precondition<'_>>) -> (Vec<chrono::DateTime<chrono::Utc>>, bool) {
    match expected {
        Some(accepted) => (accepted.to_vec(), false),
        None => (Vec::new(), true),
    }
}

/// What a write statement returned, turned into the port's value.
trait WrittenRow<T> {
    fn into_written(self, owner: &OwnerId) -> Result<T, RepoError>;
}

impl WrittenRow<Task> for Row {
    fn into_written(self, owner: &OwnerId) -> Result<Task, RepoError> {
        into_task(self, owner)
    }
}

impl WrittenRow<()> for () {
    fn into_written(self, _: &OwnerId) -> Result<(), RepoError> {
        Ok(())
    }
}

struct Writing<'a> {
    replica: Option<&'a replica::Replica>,
    owner: &'a OwnerId,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if let Some(replica) = self.replica {
            replica.wrote(self.owner);
        }
    }
}
