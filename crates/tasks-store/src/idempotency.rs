//! Idempotent creates (`Idempotency-Key`): the key is claimed in the same
//! transaction as the task it creates.
//!
//! A key row holds the outcome of the first call (status 201 with the task id
//! and creation time, or 409 for the task limit) and the fingerprint of its
//! request. The first response is rebuilt from it and from the request itself,
//! which a matching fingerprint proves identical, so no body is stored.
//!
//! On PostgreSQL a call is four round trips: `BEGIN`, the lock, one statement
//! that looks the key up, counts the owner's keys and creates when the key
//! is new ([`PG_KEYED`]), `COMMIT`. On SQLite, the look-up, the count,
//! the create and the key row, in one savepoint of the writer's group-commit
//! batch (`writer.rs`).
//!
//! Concurrent calls with one key:
//! - PostgreSQL: the transaction first takes `pg_try_advisory_xact_lock` on a
//!   64-bit hash of (scope, owner, key). A second call that does not get it
//!   answers "in flight" at once; without it, it would block on the key's
//!   unique index until the first commits (and then fail), holding a
//!   connection. The lock ends with the transaction (so it works behind a
//!   transaction-pooling PgBouncer and across instances), and PostgreSQL
//!   releases it only after the commit is visible, so a call that gets it
//!   next sees the first call's key row. Two different keys with the same
//!   64-bit hash, sent at the same moment, would make one of them a
//!   spurious (retryable) "in flight"; nothing is ever wrongly replayed,
//!   since the row is looked up by the key itself.
//! - SQLite: one writer at a time (the writer thread), so a second call could
//!   only wait for the first and then replay it. A process-local marker
//!   answers "in flight" at once instead, as on PostgreSQL; another process
//!   on the same file still waits for the write lock and then replays.

use std::collections::HashSet;
use std::sync::Mutex;

use diesel::QueryableByName;
use diesel::result::QueryResult;
use diesel::sql_types::{BigInt, Binary, Bool, Integer, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use sha2::{Digest as _, Sha256};
use tasks_domain::{NewTask, OwnerId, Task, TaskId};
use tasks_ports::{IdempotencyKey, IdempotentCreate, RepoError};

use crate::DieselTaskStore;
use crate::pool::Backend;
use crate::pool::with_conn;
use crate::rows::{Row, into_task};
use crate::writer::SqliteConn;

/// The status stored for a create that hit the task limit.
const LIMIT_STATUS: i32 = 409;
const CREATED_STATUS: i32 = 201;

/// The keys being claimed in this process right now (SQLite).
#[derive(Default)]
pub(crate) struct InFlight(Mutex<HashSet<(String, String, String)>>);

/// Removes its key from [`InFlight`] when dropped, on every path out
/// (including a request dropped mid-query).
struct Marker<'a> {
    set: &'a InFlight,
    entry: Option<(String, String, String)>,
}

impl InFlight {
    /// Marks the key, or `None` when it is already marked.
    fn mark(&self, owner: &OwnerId, key: &IdempotencyKey<'_>) -> Option<Marker<'_>> {
        let entry = (
            owner.as_str().to_owned(),
            key.scope.to_owned(),
            key.key.to_owned(),
        );
        let mut set = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !set.insert(entry.clone()) {
            // Not `then_some`: a `Marker` built and dropped here would
            // unmark the first caller's key (under this very lock).
            return None;
        }
        Some(Marker {
            set: self,
            entry: Some(entry),
        })
    }
}

impl Drop for Marker<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            let mut set = self
                .set
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            set.remove(&entry);
        }
    }
}

/// A live key row, as looked up.
#[derive(QueryableByName)]
struct Claimed {
    #[diesel(sql_type = Binary)]
    fingerprint: Vec<u8>,
    #[diesel(sql_type = Integer)]
    status: i32,
    #[diesel(sql_type = Nullable<BigInt>)]
    task_id: Option<i64>,
    #[diesel(sql_type = BigInt)]
    created_us: i64,
}

/// The owner's live keys: how many, and when the oldest expires.
#[derive(QueryableByName)]
struct Held {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    first_expiry: Option<i64>,
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    got: bool,
}

/// What a call found or did, before it becomes the port's value.
enum Found {
    Created(Option<Row>),
    Claimed(Claimed),
    InFlight,
    /// The owner's live keys are at the cap; the oldest expires then (µs).
    Full(i64),
}

/// The advisory lock id of a key: the first 8 bytes of a SHA-256 of its
/// scope, owner and key (NUL-separated; none of them holds a NUL).
fn lock_id(owner: &OwnerId, key: &IdempotencyKey<'_>) -> i64 {
    let mut hash = Sha256::new();
    hash.update(b"tasks-idempotency/v1\0");
    hash.update(key.scope.as_bytes());
    hash.update(b"\0");
    hash.update(owner.as_str().as_bytes());
    hash.update(b"\0");
    hash.update(key.key.as_bytes());
    let digest = hash.finalize();
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

fn micros(ttl: std::time::Duration) -> i64 {
    i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX)
}

const PG_LOCK: &str = "SELECT pg_try_advisory_xact_lock($1) AS got";

const SQLITE_HELD: &str = "SELECT count(*) AS n, min(expires_us) AS first_expiry
FROM idempotency_keys WHERE user_id = ?1 AND expires_us > ?2";

/// Everything after the lock, in one statement: its snapshot is taken after
/// the lock was granted (the statement before), so it sees the key row of a
/// call that held the lock before. `old` is the key's live row, `held` the
/// owner's live keys; only when the key is new and under the cap (`go`)
/// does it create: the create of `lib.rs` plus the key row with its outcome
/// (201 and the task, or 409 when the limit left no slot). An expired row of
/// the same key is replaced. Always one result row.
const PG_KEYED: &str = "WITH old AS (
    SELECT fingerprint, status::integer AS status, task_id, created_us
    FROM idempotency_keys
    WHERE user_id = $1 AND scope = $6 AND idempotency_key = $7 AND expires_us > $9),
held AS (
    SELECT count(*) AS n, min(expires_us) AS first_expiry
    FROM idempotency_keys WHERE user_id = $1 AND expires_us > $9),
go AS (
    SELECT 1 AS x WHERE NOT EXISTS (SELECT 1 FROM old) AND (SELECT n FROM held) < $11),
slot AS (
    INSERT INTO task_counts AS c (user_id, tasks) SELECT $1, 1 FROM go
    ON CONFLICT (user_id) DO UPDATE SET tasks = c.tasks + 1 WHERE c.tasks < $2
    RETURNING 1),
task AS (
    INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at)
    SELECT $1, $3, $4, FALSE, $5, $5 FROM slot
    RETURNING id, user_id, title, description, completed, created_at, updated_at),
claim AS (
    INSERT INTO idempotency_keys AS k
        (user_id, scope, idempotency_key, fingerprint, status, task_id, created_us, expires_us)
    SELECT $1, $6, $7, $8, CASE WHEN t.id IS NULL THEN 409 ELSE 201 END, t.id, $9, $10
    FROM go LEFT JOIN task t ON TRUE
    ON CONFLICT (user_id, scope, idempotency_key) DO UPDATE SET
        fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status,
        task_id = EXCLUDED.task_id, created_us = EXCLUDED.created_us,
        expires_us = EXCLUDED.expires_us
    RETURNING 1)
SELECT old.fingerprint AS old_fingerprint, old.status AS old_status,
    old.task_id AS old_task_id, old.created_us AS old_created_us,
    held.n, held.first_expiry, EXISTS (SELECT 1 FROM go) AS went,
    task.id, task.user_id, task.title, task.description, task.completed,
    task.created_at, task.updated_at
FROM held LEFT JOIN old ON TRUE LEFT JOIN task ON TRUE";

/// The one row of [`PG_KEYED`].
#[derive(QueryableByName)]
struct PgKeyed {
    #[diesel(sql_type = Nullable<Binary>)]
    old_fingerprint: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Integer>)]
    old_status: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    old_task_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    old_created_us: Option<i64>,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    first_expiry: Option<i64>,
    #[diesel(sql_type = Bool)]
    went: bool,
    #[diesel(sql_type = Nullable<BigInt>)]
    id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    user_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    title: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    description: Option<String>,
    #[diesel(sql_type = Nullable<Bool>)]
    completed: Option<bool>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Timestamptz>)]
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Timestamptz>)]
    updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl PgKeyed {
    fn found(self, key: &IdempotencyKey<'_>) -> Found {
        if let (Some(fingerprint), Some(status), Some(created_us)) =
            (self.old_fingerprint, self.old_status, self.old_created_us)
        {
            return Found::Claimed(Claimed {
                fingerprint,
                status,
                task_id: self.old_task_id,
                created_us,
            });
        }
        if !self.went {
            let held = Held {
                n: self.n,
                first_expiry: self.first_expiry,
            };
            return Found::Full(full(&held, key).unwrap_or(0));
        }
        let row = crate::rows::joined_row(
            self.id,
            self.user_id,
            self.title,
            self.description,
            self.completed,
            self.created_at,
            self.updated_at,
        );
        Found::Created(row)
    }
}

const SQLITE_LOOKUP: &str = "SELECT fingerprint, status, task_id, created_us
FROM idempotency_keys
WHERE user_id = ?1 AND scope = ?2 AND idempotency_key = ?3 AND expires_us > ?4";

const SQLITE_CLAIM: &str = "INSERT INTO idempotency_keys
    (user_id, scope, idempotency_key, fingerprint, status, task_id, created_us, expires_us)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
ON CONFLICT (user_id, scope, idempotency_key) DO UPDATE SET
    fingerprint = excluded.fingerprint, status = excluded.status,
    task_id = excluded.task_id, created_us = excluded.created_us,
    expires_us = excluded.expires_us";

/// One short statement per batch, on the expiry index.
const PG_PURGE: &str = "WITH gone AS (
    DELETE FROM idempotency_keys WHERE ctid IN (
        SELECT ctid FROM idempotency_keys WHERE expires_us <= $1 LIMIT $2)
    RETURNING 1)
SELECT count(*) AS n FROM gone";

const SQLITE_PURGE: &str = "DELETE FROM idempotency_keys WHERE rowid IN (
    SELECT rowid FROM idempotency_keys WHERE expires_us <= ?1 LIMIT ?2)";

/// The values every statement of one call binds.
struct Call<'a> {
    owner: &'a str,
    limit: i64,
    title: &'a str,
    description: Option<&'a str>,
    now: chrono::DateTime<chrono::Utc>,
    now_us: i64,
    expires_us: i64,
    key: &'a IdempotencyKey<'a>,
    lock: i64,
}

/// `Some(first expiry)` when the owner's live keys are at the cap.
fn full(held: &Held, key: &IdempotencyKey<'_>) -> Option<i64> {
    (held.n >= i64::from(key.max_keys)).then(|| held.first_expiry.unwrap_or(0))
}

/// The PostgreSQL statements of one call, inside a transaction.
async fn pg_keyed(conn: &mut AsyncPgConnection, c: &Call<'_>) -> QueryResult<Found> {
    use diesel::sql_types::Timestamptz;
    let locked = diesel::sql_query(PG_LOCK)
        .bind::<BigInt, _>(c.lock)
        .get_result::<Locked>(conn)
        .await?;
    if !locked.got {
        return Ok(Found::InFlight);
    }
    let keyed = diesel::sql_query(PG_KEYED)
        .bind::<Text, _>(c.owner)
        .bind::<BigInt, _>(c.limit)
        .bind::<Text, _>(c.title)
        .bind::<Nullable<Text>, _>(c.description)
        .bind::<Timestamptz, _>(c.now)
        .bind::<Text, _>(c.key.scope)
        .bind::<Text, _>(c.key.key)
        .bind::<Binary, _>(&c.key.fingerprint[..])
        .bind::<BigInt, _>(c.now_us)
        .bind::<BigInt, _>(c.expires_us)
        .bind::<BigInt, _>(i64::from(c.key.max_keys))
        .get_result::<PgKeyed>(conn)
        .await?;
    Ok(keyed.found(c.key))
}

/// The SQLite statements of one call, in one savepoint of the writer's
/// batch (`writer.rs`).
async fn sqlite_keyed(conn: &mut SqliteConn, c: &Call<'_>) -> QueryResult<Found> {
    let claimed = diesel::sql_query(SQLITE_LOOKUP)
        .bind::<Text, _>(c.owner)
        .bind::<Text, _>(c.key.scope)
        .bind::<Text, _>(c.key.key)
        .bind::<BigInt, _>(c.now_us)
        .get_result::<Claimed>(conn)
        .await
        .optional()?;
    if let Some(claimed) = claimed {
        return Ok(Found::Claimed(claimed));
    }
    let held = diesel::sql_query(SQLITE_HELD)
        .bind::<Text, _>(c.owner)
        .bind::<BigInt, _>(c.now_us)
        .get_result::<Held>(conn)
        .await?;
    if let Some(first_expiry) = full(&held, c.key) {
        return Ok(Found::Full(first_expiry));
    }
    let row = crate::statements::SqliteCreate {
        owner: c.owner,
        limit: c.limit,
        title: c.title,
        description: c.description,
        now: c.now,
    }
    .get_result::<crate::statements::SqliteRow>(conn)
    .await
    .optional()?
    .map(crate::statements::into_row);
    let (status, task_id) = match &row {
        Some(row) => (CREATED_STATUS, Some(row.0)),
        None => (LIMIT_STATUS, None),
    };
    diesel::sql_query(SQLITE_CLAIM)
        .bind::<Text, _>(c.owner)
        .bind::<Text, _>(c.key.scope)
        .bind::<Text, _>(c.key.key)
        .bind::<Binary, _>(&c.key.fingerprint[..])
        .bind::<Integer, _>(status)
        .bind::<Nullable<BigInt>, _>(task_id)
        .bind::<BigInt, _>(c.now_us)
        .bind::<BigInt, _>(c.expires_us)
        .execute(conn)
        .await?;
    Ok(Found::Created(row))
}

/// Runs `body`'s statements between `begin` and `COMMIT`, or rolls back.
macro_rules! transaction {
    ($conn:expr, $begin:expr, $body:expr) => {{
        $conn.batch_execute($begin).await?;
        match $body.await {
            Ok(value) => $conn.batch_execute("COMMIT").await.map(|()| value),
            Err(err) => {
                let _ = $conn.batch_execute("ROLLBACK").await;
                Err(err)
            }
        }
    }};
}

use diesel::OptionalExtension as _;

impl DieselTaskStore {
    pub(crate) async fn create_keyed(
        &self,
        owner: &OwnerId,
        task: NewTask,
        max_tasks: u32,
        key: IdempotencyKey<'_>,
    ) -> Result<IdempotentCreate, RepoError> {
        let now = tasks_domain::now();
        let now_us = now.timestamp_micros();
        let call = Call {
            owner: owner.as_str(),
            limit: i64::from(max_tasks),
            title: task.title.as_str(),
            description: task
                .description
                .as_ref()
                .map(tasks_domain::Description::as_str),
            now,
            now_us,
            expires_us: now_us.saturating_add(micros(key.ttl)),
            key: &key,
            lock: lock_id(owner, &key),
        };
        let found = match &self.backend {
            Backend::Postgres { pool, tls } => with_conn!(@pg self, pool, tls, |conn| {
                if self.prepared_statements {
                    transaction!(conn, "BEGIN", pg_keyed(conn, &call))
                } else {
                    // `with_conn!` has opened the transaction already.
                    pg_keyed(conn, &call).await
                }
            })?,
            Backend::Sqlite(_) => {
                let Some(_marker) = self.in_flight.mark(owner, &key) else {
                    return Ok(IdempotentCreate::InFlight);
                };
                // The writer runs the statements in a savepoint of its
                // batch: one unit, under the batch's write lock.
                let (title, description, scope, client_key) =
                    (call.title, call.description, key.scope, key.key);
                let (fingerprint, max_keys, ttl) = (key.fingerprint, key.max_keys, key.ttl);
                let (owner_str, limit, expires_us, lock) =
                    (call.owner, call.limit, call.expires_us, call.lock);
                with_conn!(@sqlite_write self, [owner_str, title, description, scope, client_key], |conn| {
                    let key = IdempotencyKey {
                        scope: &scope,
                        key: &client_key,
                        fingerprint,
                        ttl,
                        max_keys,
                    };
                    let call = Call {
                        owner: &owner_str,
                        limit,
                        title: &title,
                        description: description.as_deref(),
                        now,
                        now_us,
                        expires_us,
                        key: &key,
                        lock,
                    };
                    sqlite_keyed(conn, &call).await
                })?
            }
        };
        match found {
            Found::InFlight => Ok(IdempotentCreate::InFlight),
            Found::Full(first_expiry) => Ok(IdempotentCreate::TooManyKeys {
                retry_after: std::time::Duration::from_micros(
                    u64::try_from(first_expiry.saturating_sub(now_us)).unwrap_or(0),
                ),
            }),
            Found::Created(row) => {
                self.note_write();
                let task = row.map(|r| into_task(r, owner)).transpose()?;
                Ok(IdempotentCreate::First(task))
            }
            Found::Claimed(claimed) => replayed(claimed, owner, task, &key),
        }
    }

    pub(crate) async fn purge_keys(&self, limit: u32) -> Result<u64, RepoError> {
        let now_us = tasks_domain::now().timestamp_micros();
        let limit = i64::from(limit);
        let deleted = match &self.backend {
            Backend::Postgres { pool, tls } => {
                with_conn!(@pg self, pool, tls, |conn| {
                    diesel::sql_query(PG_PURGE)
                        .bind::<BigInt, _>(now_us)
                        .bind::<BigInt, _>(limit)
                        .get_result::<crate::rows::Count>(conn)
                        .await
                })?
                .n
            }
            Backend::Sqlite(_) => {
                let n: usize = with_conn!(@sqlite_write self, [], |conn| {
                    diesel::sql_query(SQLITE_PURGE)
                        .bind::<BigInt, _>(now_us)
                        .bind::<BigInt, _>(limit)
                        .execute(conn)
                        .await
                })?;
                i64::try_from(n).unwrap_or(i64::MAX)
            }
        };
        Ok(u64::try_from(deleted).unwrap_or(0))
    }
}

/// The first call's outcome, from its key row and this (identical) request.
fn replayed(
    claimed: Claimed,
    owner: &OwnerId,
    task: NewTask,
    key: &IdempotencyKey<'_>,
) -> Result<IdempotentCreate, RepoError> {
    if claimed.fingerprint != key.fingerprint {
        return Ok(IdempotentCreate::FingerprintMismatch);
    }
    let unexpected =
        |what: &str| RepoError::Unexpected(anyhow::anyhow!("idempotency key row: {what}"));
    match (claimed.status, claimed.task_id) {
        (LIMIT_STATUS, None) => Ok(IdempotentCreate::Replayed(None)),
        (CREATED_STATUS, Some(id)) => {
            let created_at = chrono::DateTime::from_timestamp_micros(claimed.created_us)
                .ok_or_else(|| unexpected("creation time out of range"))?;
            Ok(IdempotentCreate::Replayed(Some(Task {
                id: TaskId::new(id),
                owner: owner.clone(),
                title: task.title,
                description: task.description,
                completed: false,
                created_at,
                updated_at: created_at,
            })))
        }
        _ => Err(unexpected("unknown status")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(scope: &'a str, key: &'a str) -> IdempotencyKey<'a> {
        IdempotencyKey {
            scope,
            key,
            fingerprint: [0; 32],
            ttl: std::time::Duration::from_secs(1),
            max_keys: 10,
        }
    }

    #[test]
    fn lock_ids_separate_owners_scopes_and_keys() {
        let alice = OwnerId::parse("alice").unwrap();
        let bob = OwnerId::parse("bob").unwrap();
        let a = lock_id(&alice, &key("POST /api/tasks", "k1"));
        assert_eq!(a, lock_id(&alice, &key("POST /api/tasks", "k1")));
        assert_ne!(a, lock_id(&bob, &key("POST /api/tasks", "k1")));
        assert_ne!(a, lock_id(&alice, &key("POST /api/tasks", "k2")));
        assert_ne!(a, lock_id(&alice, &key("PUT /api/tasks", "k1")));
    }

    #[test]
    fn a_marked_key_is_in_flight_until_its_marker_drops() {
        let set = InFlight::default();
        let alice = OwnerId::parse("alice").unwrap();
        let k = key("POST /api/tasks", "k1");
        let first = set.mark(&alice, &k).unwrap();
        assert!(set.mark(&alice, &k).is_none());
        assert!(set.mark(&alice, &key("POST /api/tasks", "k2")).is_some());
        drop(first);
        assert!(set.mark(&alice, &k).is_some());
    }
}
