//! Group commit for SQLite writes, and the reader threads for SQLite reads
//! ([`Readers`], at the end: the same machinery without batches).
//!
//! SQLite runs one write transaction at a time, and with `synchronous =
//! FULL` every commit waits for the disk (an `fsync` of the WAL). One
//! transaction per request makes creates fsync-bound. Here every write goes
//! to one writer thread, which owns one connection: it takes the writes that
//! arrived while its previous commit was syncing, runs them in one
//! transaction (`BEGIN IMMEDIATE` ... `COMMIT`), each inside its own
//! `SAVEPOINT`, and answers each request only once that `COMMIT` has
//! returned, that is once the batch is on disk. A failing statement rolls
//! back to its own savepoint and fails only its own request; the others
//! commit. If the `COMMIT` fails (a full disk, an I/O error), nothing of the
//! batch was written and every request of it gets the error.
//!
//! The writes are the repository's query bodies as written for diesel-async,
//! run on a `SyncConnectionWrapper` whose "blocking" calls run inline on the
//! writer thread (`Inline`): no `spawn_blocking` and no thread hop per
//! statement, and a body may open transactions of its own (they nest as
//! savepoints inside the batch), so several statements run as one unit.
//!
//! Bounds: the queue holds at most `write_queue` writes (a request finding it
//! full waits for room, within the query timeout, then gets a 503), and a
//! batch takes at most that many. A request that gives up (timeout, client
//! gone) before its write started is skipped; once started, it commits or
//! fails with its batch, like a query already sent to a server.

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use diesel::Connection as _;
use diesel::QueryResult;
use diesel::connection::{AnsiTransactionManager, SimpleConnection as _, TransactionManager};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;
use diesel_async::sync_connection_wrapper::{SpawnBlocking, SyncConnectionWrapper};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use thread_local::ThreadLocal;
use tokio::sync::{mpsc, oneshot};

use crate::errors::{breaks_connection, is_busy};
use crate::pool::Outcome;

/// Runs the wrapper's "blocking" calls at once, on the calling thread (the
/// writer thread, which exists to block on SQLite).
pub(crate) struct Inline;

impl SpawnBlocking for Inline {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, Result<R, Box<dyn std::error::Error + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        futures_util::future::ready(Ok(task())).boxed()
    }

    fn get_runtime() -> Self {
        Self
    }
}

/// A connection of the writer or of a reader thread, as the query bodies
/// see it.
pub(crate) type SqliteConn = SyncConnectionWrapper<SqliteConnection, Inline>;

/// Answers one request once its batch's commit is known.
type Reply = Box<dyn FnOnce(Result<(), &DieselError>) + Send>;
/// One request's write: run on the batch's connection (`None`: the batch
/// failed before it could run), giving back its reply.
type Job = Box<dyn FnOnce(Option<&mut SqliteConn>) -> Reply + Send>;

/// The handle of the writer thread.
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    closed: AtomicBool,
}

/// How the writer opens its connection.
pub(crate) struct WriterConfig {
    pub(crate) path: String,
    pub(crate) busy_ms: u128,
    /// Most writes queued, and most writes in one batch.
    pub(crate) queue: usize,
}

impl Writer {
    /// Starts the writer thread. Its connection is opened on the first
    /// write (and again after one breaks), so the service can start before
    /// the file is writable, as with the read pool.
    pub(crate) fn start(config: WriterConfig) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel(config.queue.max(1));
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || run(&config, queue))?;
        Ok(Self {
            jobs,
            closed: AtomicBool::new(false),
        })
    }

    /// Runs `work` in the next batch, inside its own savepoint, and gives
    /// its result once the batch's `COMMIT` has returned, within `timeout`
    /// (queue wait included).
    pub(crate) async fn write<T, F>(&self, timeout: Duration, work: F) -> Outcome<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConn) -> QueryResult<T> + Send + 'static,
    {
        submit(&self.jobs, &self.closed, timeout, move |answer| -> Job {
            Box::new(move |conn| {
                let Some(conn) = conn else {
                    return Box::new(move |batch: Result<(), &DieselError>| {
                        let _ = answer.send(Err(batch.err().map_or_else(
                            || unavailable("the write batch failed before this write ran"),
                            copy_error,
                        )));
                    });
                };
                if answer.is_closed() {
                    // The request gave up before its turn: nothing to write.
                    return Box::new(|_| {});
                }
                let result = in_savepoint(conn, work);
                Box::new(move |batch: Result<(), &DieselError>| {
                    let _ = answer.send(match batch {
                        Ok(()) => result,
                        Err(e) => Err(result.err().unwrap_or_else(|| copy_error(e))),
                    });
                })
            })
        })
        .await
    }

    /// Writes waiting in the queue (not yet taken into a batch).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// Refuses further writes; those queued still run.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

/// Sends the job `make` builds around a request's answer channel to a
/// thread's queue, and waits for the answer within `timeout` (queue wait
/// included). Giving up (the timeout, or the request's future dropped)
/// only drops the receiver: a job not started yet is then skipped, one
/// running ends on its thread. Nothing here blocks the caller's runtime.
async fn submit<T, J>(
    jobs: &mpsc::Sender<J>,
    closed: &AtomicBool,
    timeout: Duration,
    make: impl FnOnce(oneshot::Sender<QueryResult<T>>) -> J,
) -> Outcome<T> {
    if closed.load(Ordering::Relaxed) {
        return Outcome::Done(Err(unavailable("the database is closed")));
    }
    let (answer, answered) = oneshot::channel::<QueryResult<T>>();
    let job = make(answer);
    let queued = async {
        if jobs.send(job).await.is_err() {
            return Err(unavailable("the SQLite thread has stopped"));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(unavailable("the query was abandoned by its thread")))
    };
    match tokio::time::timeout(timeout, queued).await {
        Ok(result) => Outcome::Done(result),
        // No connection of the caller's is left in an unknown state.
        Err(_) => Outcome::TimedOut { settled: true },
    }
}

/// One request's read, run on a reader's connection (or told why there is
/// none); `true` when the connection must be reopened.
type ReadJob = Box<dyn FnOnce(Result<&mut SqliteConn, &DieselError>) -> bool + Send>;

/// The SQLite reader threads: each owns one read-only connection
/// (`PRAGMA query_only`) and runs the reads of a shared queue one after the
/// other, inline (`Inline`), as the writer runs writes. A request waits for
/// its answer on a oneshot channel, so a request dropped mid-read (the
/// client went away, or the query timeout) only drops its receiver: the
/// read ends on its thread, nothing blocks or panics on the request's
/// runtime. In WAL mode readers never wait for the writer.
///
/// Bounds: `threads` connections and threads; at most `queue` reads wait
/// (a request finding the queue full waits for room within the query
/// timeout, then gets a 503). A read that gave up before its turn is
/// skipped; one that gave up while running still runs to its end, holding
/// its thread (SQLite reads are not cancelled).
pub(crate) struct Readers {
    jobs: mpsc::Sender<ReadJob>,
    closed: AtomicBool,
    threads: usize,
    /// Reader connections open.
    open: Arc<AtomicUsize>,
    /// Reads running.
    busy: Arc<AtomicUsize>,
    /// Point reads, on the asking thread.
    pub(crate) points: PointReads,
}

impl Readers {
    /// Starts `threads` reader threads; each opens its connection on its
    /// first read (and again after one breaks).
    pub(crate) fn start(config: WriterConfig, threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::channel(config.queue.max(1));
        let queue = Arc::new(std::sync::Mutex::new(queue));
        let config = Arc::new(config);
        let (open, busy) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        for i in 0..threads {
            let (config, queue, open, busy) =
                (config.clone(), queue.clone(), open.clone(), busy.clone());
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{i}"))
                .spawn(move || read(&config, &queue, &open, &busy))?;
        }
        Ok(Self {
            jobs,
            closed: AtomicBool::new(false),
            threads,
            open,
            busy,
            points: PointReads {
                config,
                conns: Box::new(ThreadLocal::new()),
                opened: AtomicUsize::new(0),
            },
        })
    }

    /// Runs `work` on the next free reader within `timeout` (queue wait
    /// included).
    pub(crate) async fn read<T, F>(&self, timeout: Duration, work: F) -> Outcome<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConn) -> QueryResult<T> + Send + 'static,
    {
        submit(
            &self.jobs,
            &self.closed,
            timeout,
            move |answer| -> ReadJob {
                Box::new(move |conn| {
                    let conn = match conn {
                        Ok(conn) => conn,
                        Err(e) => {
                            let _ = answer.send(Err(copy_error(e)));
                            return false;
                        }
                    };
                    if answer.is_closed() {
                        return false;
                    }
                    let result = work(conn);
                    let broken = result.as_ref().err().is_some_and(breaks_connection)
                        || transaction_depth(conn).is_some();
                    let _ = answer.send(result);
                    broken
                })
            },
        )
        .await
    }

    /// The readers' occupancy: (threads, connections open, reads running,
    /// reads queued).
    pub(crate) fn stats(&self) -> (usize, usize, usize, usize) {
        (
            self.threads,
            self.open.load(Ordering::Relaxed),
            self.busy.load(Ordering::Relaxed),
            self.jobs.max_capacity() - self.jobs.capacity(),
        )
    }

    /// Refuses further reads; those queued still run.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

/// Reads of one row by primary key, run on the thread that asks (an HTTP
/// worker), each thread with a read-only connection of its own.
///
/// The reader threads cost a request two thread switches and two channel
/// hand-overs, several times what SQLite spends finding one row by its key
/// (bench/README.md, "SQLite point reads"). A point read is short and
/// bounded (one B-tree descent, one row of at most about 40 KB of text), so
/// it runs where it is asked, as a PostgreSQL driver would run its protocol
/// code. It never waits: its connection has `busy_timeout = 0`, and a busy
/// database, a connection that cannot be opened or a nested call gives
/// `None`, so the caller sends the read to the reader threads, which wait
/// and time out as every other read does.
///
/// Bounds: one connection per thread that has asked (the HTTP workers),
/// closed with the store.
pub(crate) struct PointReads {
    config: Arc<WriterConfig>,
    /// Boxed: the table of per-thread slots is half a kilobyte.
    conns: Box<ThreadLocal<RefCell<Option<SqliteConnection>>>>,
    /// Connections opened so far (one per thread, unless one broke).
    opened: AtomicUsize,
}

impl PointReads {
    /// Runs `work` here, or `None` when the reader threads must.
    pub(crate) fn read<T>(
        &self,
        work: impl FnOnce(&mut SqliteConnection) -> QueryResult<T>,
    ) -> Option<QueryResult<T>> {
        let mut slot = self
            .conns
            .get_or(|| RefCell::new(None))
            .try_borrow_mut()
            .ok()?;
        if slot.is_none() {
            *slot = Some(open_plain(&self.config, Role::PointReader).ok()?);
            self.opened.fetch_add(1, Ordering::Relaxed);
        }
        let conn = slot.as_mut()?;
        match work(conn) {
            Err(e) if is_busy(&e) => None,
            result => {
                if result.as_ref().err().is_some_and(breaks_connection) {
                    *slot = None;
                }
                Some(result)
            }
        }
    }
}

/// A reader thread: take a read, run it, answer; until the store is gone.
fn read(
    config: &WriterConfig,
    queue: &std::sync::Mutex<mpsc::Receiver<ReadJob>>,
    open_count: &AtomicUsize,
    busy: &AtomicUsize,
) {
    let mut conn: Option<SqliteConn> = None;
    loop {
        // The lock is held only while this thread is the one waiting.
        let job = queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .blocking_recv();
        let Some(job) = job else { return };
        if conn.is_none() {
            match open(config, Role::Reader) {
                Ok(c) => {
                    conn = Some(c);
                    open_count.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "an SQLite reader could not open the database");
                    job(Err(&e));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        busy.fetch_add(1, Ordering::Relaxed);
        // A panicking read drops its answer (the request sees an error)
        // and its connection.
        let keep = std::panic::catch_unwind(AssertUnwindSafe(|| !job(Ok(c)))).unwrap_or(false);
        busy.fetch_sub(1, Ordering::Relaxed);
        if !keep {
            conn = None;
            open_count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Runs `work` between `SAVEPOINT` and `RELEASE` (or `ROLLBACK TO` when it
/// fails), so that its failure undoes only its own statements.
fn in_savepoint<T>(
    conn: &mut SqliteConn,
    work: impl FnOnce(&mut SqliteConn) -> QueryResult<T>,
) -> QueryResult<T> {
    inline(conn, AnsiTransactionManager::begin_transaction)?;
    let result = work(conn);
    let end = if result.is_ok() {
        inline(conn, AnsiTransactionManager::commit_transaction)
    } else {
        inline(conn, AnsiTransactionManager::rollback_transaction)
    };
    match (result, end) {
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        (Ok(value), Ok(())) => Ok(value),
    }
}

/// Runs `f` on the plain connection inside the wrapper (inline).
fn inline<R: Send + 'static>(
    conn: &mut SqliteConn,
    f: impl FnOnce(&mut SqliteConnection) -> QueryResult<R> + Send + 'static,
) -> QueryResult<R> {
    conn.spawn_blocking(f)
        .now_or_never()
        .unwrap_or_else(|| Err(unavailable("an inline SQLite call did not complete")))
}

fn transaction_depth(conn: &mut SqliteConn) -> Option<u32> {
    inline(conn, |c| {
        Ok(AnsiTransactionManager::transaction_manager_status_mut(c)
            .transaction_depth()
            .ok()
            .flatten()
            .map(std::num::NonZeroU32::get))
    })
    .ok()
    .flatten()
}

/// Which thread a connection is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
    /// A connection of [`PointReads`], on the thread that asks.
    PointReader,
}

fn open(config: &WriterConfig, role: Role) -> QueryResult<SqliteConn> {
    Ok(SyncConnectionWrapper::with_runtime(
        open_plain(config, role)?,
        Inline,
    ))
}

fn open_plain(config: &WriterConfig, role: Role) -> QueryResult<SqliteConnection> {
    let mut conn = SqliteConnection::establish(&config.path)
        .map_err(|e| unavailable(&format!("could not open the database: {e}")))?;
    // Writer: FULL, a commit returns once the WAL is synced, so an
    // acknowledged write survives a crash of the process or the machine.
    // Readers: `query_only`, a statement that would write fails. A point
    // reader never waits for a lock (`busy_timeout = 0`): it must not hold
    // its worker thread, and a busy answer sends the read to the readers.
    let (busy_ms, role) = match role {
        Role::Writer => (config.busy_ms, "PRAGMA synchronous = FULL;"),
        Role::Reader => (config.busy_ms, "PRAGMA query_only = ON;"),
        Role::PointReader => (0, "PRAGMA query_only = ON;"),
    };
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {busy_ms}; PRAGMA foreign_keys = ON; {role}"
    ))?;
    Ok(conn)
}

/// The writer thread: batch, run, commit, answer; until the store is gone.
fn run(config: &WriterConfig, mut queue: mpsc::Receiver<Job>) {
    let mut conn: Option<SqliteConn> = None;
    let mut batch: Vec<Job> = Vec::new();
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        // Everything that arrived while the previous batch committed.
        while batch.len() < config.queue {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            match open(config, Role::Writer) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "the SQLite writer could not open the database");
                    fail(&mut batch, &e);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        if let Err(e) = inline(c, |c| {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")
        }) {
            if breaks_connection(&e) {
                conn = None;
            }
            fail(&mut batch, &e);
            continue;
        }
        let mut replies = Vec::with_capacity(batch.len());
        let mut broken = None;
        for job in batch.drain(..) {
            if broken.is_some() {
                replies.push(job(None));
                continue;
            }
            match std::panic::catch_unwind(AssertUnwindSafe(|| job(Some(&mut *c)))) {
                Ok(reply) => replies.push(reply),
                // Its answer is dropped: the request sees an error.
                Err(_) => broken = Some(unavailable("a write in the batch panicked")),
            }
            if broken.is_none() && transaction_depth(c) != Some(1) {
                broken = Some(unavailable(
                    "a write left the batch's transaction unbalanced",
                ));
            }
        }
        let commit = match broken {
            Some(e) => Err(e),
            None => inline(c, AnsiTransactionManager::commit_transaction),
        };
        if let Err(e) = &commit {
            tracing::warn!(error = %e, writes = replies.len(), "an SQLite write batch failed");
            let rolled_back = transaction_depth(c).is_none()
                || inline(c, AnsiTransactionManager::rollback_transaction).is_ok();
            if !rolled_back || breaks_connection(e) {
                conn = None;
            }
        }
        let commit = commit.as_ref().map(|_| ());
        for reply in replies {
            reply(commit);
        }
    }
}

/// Answers every write of a batch that could not start with `err`.
fn fail(batch: &mut Vec<Job>, err: &DieselError) {
    for job in batch.drain(..) {
        job(None)(Err(err));
    }
}

/// Diesel's errors cannot be cloned: each request of a failed batch gets
/// one of the same kind and message (which is what the error mapping reads).
fn copy_error(err: &DieselError) -> DieselError {
    match err {
        DieselError::DatabaseError(kind, info) => {
            let kind = match kind {
                DatabaseErrorKind::ClosedConnection => DatabaseErrorKind::ClosedConnection,
                DatabaseErrorKind::UnableToSendCommand => DatabaseErrorKind::UnableToSendCommand,
                DatabaseErrorKind::SerializationFailure => DatabaseErrorKind::SerializationFailure,
                _ => DatabaseErrorKind::Unknown,
            };
            DieselError::DatabaseError(kind, Box::new(info.message().to_owned()))
        }
        other => unavailable(&other.to_string()),
    }
}

/// An error the mapping reads as "the database did not answer" (503).
fn unavailable(message: &str) -> DieselError {
    DieselError::DatabaseError(
        DatabaseErrorKind::UnableToSendCommand,
        Box::new(message.to_owned()),
    )
}

/// Runs a query body written for diesel-async to its end on the writer
/// thread: with `Inline`, each of its awaits is ready at once.
pub(crate) fn inline_body<T>(body: impl Future<Output = QueryResult<T>>) -> QueryResult<T> {
    body.now_or_never().unwrap_or_else(|| {
        Err(unavailable(
            "a write body awaited something else than SQLite",
        ))
    })
}

/// A variable a write body borrows, as an owned value that can move to the
/// writer thread (`with_conn!(@write ...)`'s captures).
pub(crate) trait Owned {
    type Out: Send + 'static;
    fn owned(self) -> Self::Out;
}

impl<T: Clone + Send + 'static> Owned for &T {
    type Out = T;
    fn owned(self) -> T {
        self.clone()
    }
}

impl Owned for &str {
    type Out = String;
    fn owned(self) -> String {
        self.to_owned()
    }
}

impl<T: Owned> Owned for Option<T> {
    type Out = Option<T::Out>;
    fn owned(self) -> Self::Out {
        self.map(Owned::owned)
    }
}

impl<T: Send + 'static> Owned for Vec<T> {
    type Out = Self;
    fn owned(self) -> Self {
        self
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use diesel::sql_types::Text;
    use diesel_async::{AsyncConnection as _, RunQueryDsl as _};

    use super::*;
    use crate::pool::Backend;
    use crate::{DatabaseLocation, DieselTaskStore, StoreConfig};

    /// A migrated SQLite store in a fresh temporary directory, and that
    /// directory.
    pub(crate) async fn store(name: &str) -> (Arc<DieselTaskStore>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("tasks_writer_{name}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = StoreConfig {
            location: DatabaseLocation::Sqlite(dir.join("tasks.db")),
            pool_size: 2,
            connect_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(30),
            prepared_statements: true,
            read_replica: None,
            write_queue: 256,
        };
        crate::run_migrations(&config).await.unwrap();
        (Arc::new(DieselTaskStore::connect(&config).unwrap()), dir)
    }

    /// One task row of `user`; an empty title breaks the table's CHECK.
    async fn insert(conn: &mut SqliteConn, user: &str, title: &str) -> QueryResult<usize> {
        diesel::sql_query(
            "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at) \
             VALUES (?, ?, NULL, 0, '2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00')",
        )
        .bind::<Text, _>(user)
        .bind::<Text, _>(title)
        .execute(conn)
        .await
    }

    fn titles(dir: &std::path::Path, user: &str) -> Vec<String> {
        #[derive(diesel::QueryableByName)]
        struct T {
            #[diesel(sql_type = Text)]
            title: String,
        }
        let mut conn =
            SqliteConnection::establish(&dir.join("tasks.db").to_string_lossy()).unwrap();
        let query = diesel::sql_query("SELECT title FROM tasks WHERE user_id = ? ORDER BY id")
            .bind::<Text, _>(user);
        diesel::RunQueryDsl::load::<T>(query, &mut conn)
            .unwrap()
            .into_iter()
            .map(|t| t.title)
            .collect()
    }

    /// Holds the writer inside a batch until the returned sender is dropped,
    /// so that the writes sent meanwhile all wait for the next batch.
    async fn hold_writer(store: &Arc<DieselTaskStore>) -> std::sync::mpsc::Sender<()> {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel();
        let holder = store.clone();
        tokio::spawn(async move {
            let outcome = holder
                .sqlite_write(move |_| {
                    let _ = started.send(());
                    let _ = gate.recv();
                    Ok(())
                })
                .await;
            assert!(matches!(outcome, Outcome::Done(Ok(()))));
        });
        running.await.unwrap();
        release
    }

    /// A get runs on the asking thread's own connection; while another
    /// process holds the database exclusively, the point read steps aside
    /// at once (no busy wait on the worker) and the reader threads answer
    /// once the lock is gone, within the query timeout.
    #[tokio::test(flavor = "current_thread")]
    async fn point_reads_run_here_and_step_aside_when_the_database_is_busy() {
        use tasks_domain::{OwnerId, TaskId};
        use tasks_ports::TaskRepository as _;

        let (store, dir) = store("points").await;
        let Backend::Sqlite(readers) = &store.backend else {
            panic!("an SQLite store")
        };
        let opened = || AtomicUsize::load(&readers.points.opened, Ordering::Relaxed);
        let owner = OwnerId::parse("alice").unwrap();
        // Before the service has opened anything, another connection takes
        // the file for itself, with a task in its open transaction.
        let mut holder =
            SqliteConnection::establish(&dir.join("tasks.db").to_string_lossy()).unwrap();
        holder
            .batch_execute(
                "PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; \
                 INSERT INTO tasks (id, user_id, title, completed, created_at, updated_at) \
                 VALUES (7, 'alice', 'held', 0, '2026-01-01 00:00:00+00:00', \
                 '2026-01-01 00:00:00+00:00');",
            )
            .unwrap();
        let here = readers.points.read(|c| {
            diesel::RunQueryDsl::get_result::<crate::rows::Count>(
                diesel::sql_query("SELECT count(*) AS n FROM tasks"),
                c,
            )
        });
        assert!(here.is_none(), "a busy point read must step aside");
        let getter = store.clone();
        let (who, id) = (owner.clone(), TaskId::new(7));
        let waiting = tokio::spawn(async move { getter.get(&who, id).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "the reader waits for the lock");
        holder.batch_execute("COMMIT;").unwrap();
        drop(holder);
        let got = waiting.await.unwrap().unwrap().unwrap();
        assert_eq!(got.title.as_str(), "held");
        // Point reads work again, on one connection for this thread.
        let got = store.get(&owner, id).await.unwrap().unwrap();
        assert_eq!(got.title.as_str(), "held");
        assert!(store.get(&owner, id).await.unwrap().is_some());
        assert_eq!(opened(), 1);
        let stranger = OwnerId::parse("bob").unwrap();
        assert!(store.get(&stranger, id).await.unwrap().is_none());
    }

    async fn queued(store: &DieselTaskStore, n: usize) {
        while store.writer.as_ref().unwrap().queued() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Forty writes in one batch, the twentieth breaking a CHECK: only that
    /// one fails, the others are committed and answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_fails_only_its_own_request_in_a_batch() {
        let (store, dir) = store("batch").await;
        let release = hold_writer(&store).await;
        let writes: Vec<_> = (0..40)
            .map(|i| {
                let store = store.clone();
                let title = if i == 20 {
                    String::new()
                } else {
                    format!("t{i}")
                };
                tokio::spawn(async move {
                    store
                        .sqlite_write(move |conn| {
                            inline_body(async move { insert(conn, "batch", &title).await })
                        })
                        .await
                })
            })
            .collect();
        queued(&store, 40).await;
        drop(release);
        for (i, write) in writes.into_iter().enumerate() {
            match write.await.unwrap() {
                Outcome::Done(Ok(1)) => assert_ne!(i, 20),
                Outcome::Done(Err(e)) => {
                    assert_eq!(i, 20, "write {i} failed: {e}");
                    assert!(e.to_string().contains("CHECK"), "{e}");
                }
                _ => panic!("write {i}: unexpected outcome"),
            }
        }
        let stored = titles(&dir, "batch");
        assert_eq!(stored.len(), 39);
        assert!(!stored.contains(&String::new()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A write of several statements in a transaction of its own (a nested
    /// savepoint) is one unit inside the batch: all of it or none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_of_several_statements_is_one_unit_in_the_batch() {
        let (store, dir) = store("unit").await;
        let release = hold_writer(&store).await;
        let unit = |ok: bool| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .sqlite_write(move |conn| {
                        inline_body(async move {
                            conn.transaction::<_, DieselError, _>(async |c| {
                                insert(c, "unit", if ok { "first" } else { "doomed" }).await?;
                                insert(c, "unit", if ok { "second" } else { "" }).await?;
                                Ok(())
                            })
                            .await
                        })
                    })
                    .await
            })
        };
        let (good, bad, after) = (unit(true), unit(false), {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .sqlite_write(|conn| {
                        inline_body(async move { insert(conn, "unit", "third").await })
                    })
                    .await
            })
        });
        queued(&store, 3).await;
        drop(release);
        assert!(matches!(good.await.unwrap(), Outcome::Done(Ok(()))));
        assert!(matches!(bad.await.unwrap(), Outcome::Done(Err(_))));
        assert!(matches!(after.await.unwrap(), Outcome::Done(Ok(1))));
        // The three writes may reach the queue in any order (the runtime has
        // two workers); what matters is that the failed unit left nothing.
        let mut stored = titles(&dir, "unit");
        stored.sort();
        assert_eq!(stored, ["first", "second", "third"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A read abandoned while it runs (the request's future dropped, here
    /// by a timeout) on a current-thread runtime, as on actix's workers:
    /// no panic (diesel-async's own wrapper called `block_in_place` there),
    /// the read ends on its thread, and the reader answers the next one.
    #[tokio::test(flavor = "current_thread")]
    async fn a_read_dropped_while_running_neither_panics_nor_blocks_its_reader() {
        let (store, dir) = store("readdrop").await;
        let Backend::Sqlite(readers) = &store.backend else {
            panic!("an SQLite store")
        };
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        let read = readers.read(Duration::from_secs(30), move |conn| {
            let _ = started.send(());
            let _ = gate.recv();
            inline_body(async move {
                diesel::sql_query("SELECT 1 AS n")
                    .get_result::<crate::rows::Count>(conn)
                    .await
            })
        });
        let mut read = Box::pin(read);
        // Polled until the reader has started it, then dropped mid-run.
        while running.try_recv().is_err() {
            let _ = (&mut read).now_or_never();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(read);
        drop(release);
        let outcome = readers
            .read(Duration::from_secs(30), |conn| {
                inline_body(async move { insert(conn, "readdrop", "no").await })
            })
            .await;
        // Readers are read-only.
        assert!(matches!(outcome, Outcome::Done(Err(_))));
        let outcome = readers
            .read(Duration::from_secs(30), |conn| {
                inline_body(async move {
                    diesel::sql_query("SELECT 2 AS n")
                        .get_result::<crate::rows::Count>(conn)
                        .await
                })
            })
            .await;
        assert!(matches!(
            outcome,
            Outcome::Done(Ok(crate::rows::Count { n: 2 }))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A full queue: the write waits within the query timeout, then gives
    /// up (a 503 for the request) and is skipped, never run later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_gave_up_in_the_queue_is_never_run() {
        let (store, dir) = store("gaveup").await;
        let release = hold_writer(&store).await;
        let writer = store.writer.as_ref().unwrap();
        let outcome = writer
            .write(Duration::from_millis(50), |conn| {
                inline_body(async move { insert(conn, "gaveup", "late").await })
            })
            .await;
        assert!(matches!(outcome, Outcome::TimedOut { .. }));
        drop(release);
        let outcome = writer
            .write(Duration::from_secs(30), |conn| {
                inline_body(async move { insert(conn, "gaveup", "next").await })
            })
            .await;
        assert!(matches!(outcome, Outcome::Done(Ok(1))));
        assert_eq!(titles(&dir, "gaveup"), ["next"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod build_tests {
    use diesel::Connection as _;

    /// `.cargo/config.toml` builds SQLite in multi-thread mode (no mutex per
    /// call; each connection is one thread's at a time).
    #[test]
    fn sqlite_is_built_multi_threaded() {
        #[derive(diesel::QueryableByName)]
        struct CompileOption {
            #[diesel(sql_type = diesel::sql_types::Text)]
            compile_options: String,
        }
        let mut conn = diesel::SqliteConnection::establish(":memory:").unwrap();
        let options: Vec<CompileOption> =
            diesel::RunQueryDsl::load(diesel::sql_query("PRAGMA compile_options"), &mut conn)
                .unwrap();
        let options: Vec<String> = options.into_iter().map(|o| o.compile_options).collect();
        assert!(
            options.iter().any(|o| o == "THREADSAFE=2"),
            "is LIBSQLITE3_FLAGS overridden? {options:?}"
        );
    }
}
