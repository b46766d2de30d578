//! The change log behind `GET /api/tasks/changes`: reading a page of it, and
//! its bounded clean-up.
//!
//! # How changes are versioned
//!
//! Each owner has a version counter (`task_sync.version`) and each task one
//! row in `task_changes` holding the version of its latest change; a deleted
//! task leaves a tombstone row (`deleted`). Row triggers on `tasks` (see the
//! `change_feed` migrations) bump the owner's counter and upsert the task's
//! row in the same transaction as the write, so every write stays one
//! statement and one round trip, and writes made behind the service's back
//! (psql, sqlite3, another program) are recorded as well.
//!
//! A reader asks for the rows with a version above its cursor and moves its
//! cursor to the highest version it got. That never skips a change only if a
//! version, once visible, has every lower version of the same owner visible
//! too. This is why the version is a counter bumped under a row lock, and
//! neither of the obvious alternatives:
//!
//! - a timestamp: `now()` is the start of the transaction, so a transaction
//!   that started before the reader's cursor but commits after the reader
//!   polled lands "in the past", behind a cursor that has moved on;
//! - a sequence or `BIGSERIAL`: numbers are handed out at `nextval()`, not at
//!   commit, so version 11 can commit (and be read, moving the cursor past
//!   10) before version 10 commits.
//!
//! The trigger's `INSERT ... ON CONFLICT DO UPDATE` on the owner's
//! `task_sync` row takes that row's lock and holds it until commit: a second
//! write of the same owner waits, then reads the committed counter and takes
//! the next number. Versions of one owner therefore commit in order, and a
//! snapshot that contains version n contains every version below it. The
//! lock is per owner: it serialises one user's writes (already serialised
//! in practice by one person's clicks), never different users'. On SQLite
//! the database's single writer lock gives the same order.
//!
//! The reader takes the owner's head version, `purged_through` and the page
//! in one statement, so a page is one consistent snapshot on both backends.
//!
//! How it sits beside the other statements (PostgreSQL): row triggers of a
//! statement run at its end, so the create's CTE (which upserts the owner's
//! `task_counts` row, then inserts) and the delete's (which gives the slot
//! back) take the `task_counts` lock first and the `task_sync` lock last; the
//! trigger writes only `task_sync` and `task_changes`, which no statement of
//! the service touches otherwise. A transaction holding an owner's
//! `task_sync` lock is always at the end of its one statement and waits for
//! nothing another writer of that owner holds, so no lock cycle forms.
//!
//! # Who is notified (PostgreSQL)
//!
//! For live updates across instances the trigger sends
//! `NOTIFY tasks_changed, '<version> <owner>'`, delivered at commit (never
//! for a rolled-back write); behind a transaction-pooling PgBouncer that
//! works as is (only `LISTEN` needs a session), and the trigger needs no
//! session state. But a notifying commit takes a database-wide lock held
//! through its WAL flush, so notifying commits no longer share flushes:
//! 64 clients creating tasks went from about 4,300-5,300 commits/s to
//! 330-420 (docs/OPERATIONS.md, "Change log"). So the trigger notifies
//! only for an owner that some event stream watches: its `task_sync` row's
//! `watched_until` is in the future (and `tasks.notify_changes` is not
//! `off`). The upsert that bumps the version returns `watched_until` too,
//! so this costs no extra lookup.
//!
//! A stream registers its owner before it reads its starting point from
//! the log ([`DieselTaskStore::watch_here`], the port's `watch`):
//!
//! ```sql
//! INSERT INTO task_sync (user_id, version, watched_until) VALUES ($1, 0, now() + ttl)
//! ON CONFLICT (user_id) DO UPDATE
//! SET watched_until = GREATEST(coalesce(task_sync.watched_until, '-infinity'), EXCLUDED.watched_until)
//! ```
//!
//! which takes the owner's row lock, the lock every write of that owner
//! takes in its trigger. So each write of the owner either
//!
//! - committed before the registration took the lock (a write holding the
//!   lock when the registration arrives makes it wait for that commit):
//!   the stream's first read of the log, made after the registration
//!   returned, sees it; or
//! - took the lock after the registration committed: its upsert
//!   (`ON CONFLICT DO UPDATE` acts on the latest committed row version,
//!   whatever the writer's snapshot) returns the new `watched_until`, which
//!   is later than the writer's `now()` (its transaction's start, which
//!   precedes its taking the lock) while the registration lasts, and it
//!   notifies.
//!
//! Nothing falls between the two. While the stream is open its instance
//! renews the registration every half TTL; if renewals stop for longer
//! (an outage), the instance makes its streams read the log once a renewal
//! succeeds again, which covers the writes that went unnotified meanwhile.
//! An owner stays watched at most one TTL after its last stream closed
//! (notifications nobody needs, harmless).
//!
//! The registration creates the row with version 0 for an owner who never
//! wrote. Every reader treats it as the missing row it replaces: the head is
//! 0 (`coalesce(max(version), 0)` either way), a cursor above 0 gets
//! [`Changes::Reset`], the first write bumps it to 1 (`version + 1`), and
//! the clean-up never picks the owner (its targets come from
//! `task_changes`, where such an owner has no row; `tasks_purge_changes`
//! returns 0 for `through` above the head). SQLite has no `watched_until`:
//! nothing notifies there (one instance per file pokes its own streams).
//!
//! # Clean-up
//!
//! Tombstones are kept for a retention period and at most a number per
//! owner; [`DieselTaskStore::purge_changes`] removes older ones in bounded
//! rounds and raises the owner's `purged_through`: a cursor below it might
//! have missed a deletion, so it gets [`Changes::Reset`]. Live tasks whose
//! version is at or below the new `purged_through` are given fresh versions
//! above the head (in their order), so a full sync from 0 that pages through
//! them never holds a cursor below `purged_through`; clients already up to
//! date see those tasks once more, unchanged.

use std::time::Duration;

use diesel::sql_types::{Array, BigInt, Double, Text};
use diesel_async::RunQueryDsl;
use tasks_domain::{OwnerId, TaskId};
use tasks_ports::{ChangePage, Changes, RepoError};

use crate::DieselTaskStore;
use crate::pool::{Backend, with_conn};
use crate::rows::{Count, PgChangeRow, SqliteChangeRow, into_task};

/// Owners handled per clean-up round at most.
pub const PURGE_OWNERS_PER_ROUND: i64 = 100;

/// What the clean-up keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeRetention {
    /// Tombstones older than this are removed.
    pub max_age: Duration,
    /// At most this many tombstones per owner; older ones are removed.
    pub max_tombstones: u32,
    /// The cap is checked for owners who deleted a task within this long
    /// (a few clean-up intervals: an owner goes past the cap only by
    /// deleting, and is trimmed at the next round; one who then stops
    /// deleting for longer than this while no round runs stays over the cap
    /// by those deletions until their next one).
    pub cap_window: Duration,
}

/// The head, the page and the purge mark in one statement: the aggregate
/// row always exists (versions 0 for an owner who never wrote), joined with
/// up to `$3` entries after `$2` (taken in version order from the owner's
/// index first, then joined with their tasks by primary key). Tombstones are left out of a full sync
/// (`$2` = 0). A change whose task row is gone (a `TRUNCATE` behind the
/// service's back fires no row trigger) is reported as a deletion.
const PG_CHANGES: &str = "SELECT h.head, h.purged, p.version, p.deleted, p.task_id,
       p.id, p.user_id, p.title, p.description, p.completed, p.created_at, p.updated_at
FROM (SELECT coalesce(max(version), 0) AS head, coalesce(max(purged_through), 0) AS purged
      FROM task_sync WHERE user_id = $1) h
LEFT JOIN (
    SELECT c.version, c.deleted, c.task_id, t.id, t.user_id, t.title, t.description,
           t.completed, t.created_at, t.updated_at
    FROM (SELECT version, deleted, task_id, user_id FROM task_changes
          WHERE user_id = $1 AND version > $2 AND (NOT deleted OR $2 > 0)
          ORDER BY version
          LIMIT $3) c
    LEFT JOIN tasks t ON t.id = c.task_id AND t.user_id = c.user_id AND NOT c.deleted) p ON TRUE
ORDER BY p.version";

const SQLITE_CHANGES: &str = "SELECT h.head, h.purged, p.version, p.deleted, p.task_id,
       p.id, p.user_id, p.title, p.description, p.completed, p.created_at, p.updated_at
FROM (SELECT coalesce(max(version), 0) AS head, coalesce(max(purged_through), 0) AS purged
      FROM task_sync WHERE user_id = ?1) h
LEFT JOIN (
    SELECT c.version, c.deleted, c.task_id, t.id, t.user_id, t.title, t.description,
           t.completed, t.created_at, t.updated_at
    FROM (SELECT version, deleted, task_id, user_id FROM task_changes
          WHERE user_id = ?1 AND version > ?2 AND (NOT deleted OR ?2 > 0)
          ORDER BY version
          LIMIT ?3) c
    LEFT JOIN tasks t ON t.id = c.task_id AND t.user_id = c.user_id AND NOT c.deleted) p ON TRUE
ORDER BY p.version";

/// The owners whose tombstones must go, and up to which version: the newest
/// expired tombstone (older than `$1` seconds), and the newest tombstone
/// beyond the `$2` most recent ones. Only owners who deleted something in
/// the last `$4` seconds can have gone past the cap since an earlier round,
/// so only they are counted (one range of the tombstones' age index, then
/// at most `$2` + 1 index entries each), not every owner's tombstones. At
/// most `$3` owners a round.
const PG_PURGE_TARGETS: &str = "SELECT user_id, max(through) AS through FROM (
    SELECT user_id, max(version) AS through FROM task_changes
    WHERE deleted AND changed_at < now() - make_interval(secs => $1)
    GROUP BY user_id
    UNION ALL
    SELECT r.user_id,
           (SELECT t.version FROM task_changes t WHERE t.user_id = r.user_id AND t.deleted
            ORDER BY t.version DESC LIMIT 1 OFFSET $2) AS through
    FROM (SELECT DISTINCT user_id FROM task_changes
          WHERE deleted AND changed_at >= now() - make_interval(secs => $4)) r
) x WHERE through IS NOT NULL GROUP BY user_id ORDER BY user_id LIMIT $3";

const SQLITE_PURGE_TARGETS: &str = "SELECT user_id, max(through) AS through FROM (
    SELECT user_id, max(version) AS through FROM task_changes
    WHERE deleted AND changed_at < strftime('%Y-%m-%d %H:%M:%f', 'now', ?1)
    GROUP BY user_id
    UNION ALL
    SELECT r.user_id,
           (SELECT t.version FROM task_changes t WHERE t.user_id = r.user_id AND t.deleted
            ORDER BY t.version DESC LIMIT 1 OFFSET ?2) AS through
    FROM (SELECT DISTINCT user_id FROM task_changes
          WHERE deleted AND changed_at >= strftime('%Y-%m-%d %H:%M:%f', 'now', ?4)) r
) x WHERE through IS NOT NULL GROUP BY user_id ORDER BY user_id LIMIT ?3";

/// Registers owners as watched until `$2` seconds from now (see the module
/// doc, "Who is notified"): one upsert of each owner's `task_sync` row (a
/// version 0 row for an owner who never wrote), which never moves
/// `watched_until` back. Owners are distinct (one statement may not update a
/// row twice) and locked in one order, so two instances registering
/// overlapping owners at once wait for each other instead of deadlocking.
const PG_WATCH: &str = "INSERT INTO task_sync AS s (user_id, version, watched_until)
SELECT DISTINCT o, 0::BIGINT, now() + make_interval(secs => $2)
FROM unnest($1::TEXT[]) AS u(o)
ORDER BY o
ON CONFLICT (user_id) DO UPDATE
SET watched_until = GREATEST(coalesce(s.watched_until, '-infinity'), EXCLUDED.watched_until)";

/// Owners registered per statement at most (one statement for the default
/// `SSE_MAX_STREAMS` of 1000).
pub const WATCH_BATCH: usize = 1000;

#[derive(diesel::QueryableByName)]
struct Target {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = BigInt)]
    through: i64,
}

impl DieselTaskStore {
    /// The port's `changes`, always on the primary: a replica's snapshot
    /// would be consistent too, but behind the caller's own writes.
    pub(crate) async fn changes_here(
        &self,
        owner: &OwnerId,
        since: i64,
        limit: usize,
    ) -> Result<Changes, RepoError> {
        let _timer = self.timer("changes");
        let limit = limit.max(1);
        // One entry more than asked tells whether more follow.
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        let rows: Vec<PgChangeRow> = match &self.backend {
            Backend::Postgres { pool, tls } => with_conn!(@pg self, pool, tls, |conn| {
                diesel::sql_query(PG_CHANGES)
                    .bind::<Text, _>(owner.as_str())
                    .bind::<BigInt, _>(since)
                    .bind::<BigInt, _>(fetch)
                    .load::<PgChangeRow>(conn)
                    .await
            })?,
            Backend::Sqlite(_) => with_conn!(@sqlite_read self, [owner], |conn| {
                diesel::sql_query(SQLITE_CHANGES)
                    .bind::<Text, _>(owner.as_str())
                    .bind::<BigInt, _>(since)
                    .bind::<BigInt, _>(fetch)
                    .load::<SqliteChangeRow>(conn)
                    .await
            })?
            .into_iter()
            .map(PgChangeRow::from)
            .collect(),
        };
        page(rows, owner, since, limit)
    }

    /// The port's `watch`: on PostgreSQL one upsert per [`WATCH_BATCH`]
    /// owners, on the primary; on SQLite nothing (nothing notifies there).
    pub(crate) async fn watch_here(
        &self,
        owners: &[OwnerId],
        ttl: Duration,
    ) -> Result<(), RepoError> {
        let Backend::Postgres { pool, tls } = &self.backend else {
            return Ok(());
        };
        let _timer = self.timer("watch");
        let seconds = ttl.as_secs_f64();
        let mut owners: Vec<&str> = owners.iter().map(OwnerId::as_str).collect();
        owners.sort_unstable();
        owners.dedup();
        for batch in owners.chunks(WATCH_BATCH) {
            let batch = batch.to_vec();
            with_conn!(@pg self, pool, tls, |conn| {
                diesel::sql_query(PG_WATCH)
                    .bind::<Array<Text>, _>(&batch)
                    .bind::<Double, _>(seconds)
                    .execute(conn)
                    .await
            })?;
        }
        Ok(())
    }

    /// One clean-up round: removes tombstones older than
    /// `retention.max_age` and beyond `retention.max_tombstones` per owner,
    /// for at most [`PURGE_OWNERS_PER_ROUND`] owners, each in a short
    /// transaction of its own. Returns the tombstones removed and whether
    /// owners were left for another round. Idempotent: instances may run it
    /// at the same time.
    ///
    /// # Errors
    /// As every repository call: the database is unavailable or failed.
    #[tracing::instrument(level = "debug", name = "db.purge_changes", skip_all, fields(backend = self.backend.name()))]
    pub async fn purge_changes(
        &self,
        retention: ChangeRetention,
    ) -> Result<(u64, bool), RepoError> {
        let _timer = self.timer("purge_changes");
        let max_age = retention.max_age.as_secs_f64();
        let window = retention.cap_window.as_secs_f64();
        let cap = i64::from(retention.max_tombstones);
        let targets: Vec<Target> = match &self.backend {
            Backend::Postgres { pool, tls } => with_conn!(@pg self, pool, tls, |conn| {
                diesel::sql_query(PG_PURGE_TARGETS)
                    .bind::<Double, _>(max_age)
                    .bind::<BigInt, _>(cap)
                    .bind::<BigInt, _>(PURGE_OWNERS_PER_ROUND)
                    .bind::<Double, _>(window)
                    .load::<Target>(conn)
                    .await
            })?,
            Backend::Sqlite(_) => {
                let age = format!("-{max_age:.3} seconds");
                let window = format!("-{window:.3} seconds");
                with_conn!(@sqlite_read self, [], |conn| {
                    diesel::sql_query(SQLITE_PURGE_TARGETS)
                        .bind::<Text, _>(&age)
                        .bind::<BigInt, _>(cap)
                        .bind::<BigInt, _>(PURGE_OWNERS_PER_ROUND)
                        .bind::<Text, _>(&window)
                        .load::<Target>(conn)
                        .await
                })?
            }
        };
        let more = i64::try_from(targets.len()).unwrap_or(i64::MAX) >= PURGE_OWNERS_PER_ROUND;
        let mut removed = 0u64;
        for target in targets {
            let n = self.purge_owner(&target.user_id, target.through).await?;
            removed += u64::try_from(n).unwrap_or(0);
        }
        Ok((removed, more))
    }

    /// Forgets one owner's tombstones up to `through` (see the module doc).
    async fn purge_owner(&self, owner: &str, through: i64) -> Result<i64, RepoError> {
        match &self.backend {
            Backend::Postgres { pool, tls } => Ok(with_conn!(@pg self, pool, tls, |conn| {
                diesel::sql_query("SELECT tasks_purge_changes($1, $2) AS n")
                    .bind::<Text, _>(owner)
                    .bind::<BigInt, _>(through)
                    .get_result::<Count>(conn)
                    .await
            })?
            .n),
            Backend::Sqlite(_) => {
                // In one savepoint of the writer's batch: one unit.
                with_conn!(@sqlite_write self, [owner], |conn| {
                    conn.spawn_blocking(move |c| blocking::sqlite_purge_owner(c, &owner, through))
                        .await
                })
            }
        }
    }
}

/// The SQLite twin of the `tasks_purge_changes` function of the PostgreSQL
/// migration, run by the writer thread inside the savepoint it gives each
/// write of a batch (so its statements are one unit), on the plain
/// connection (hence diesel's own `RunQueryDsl`, in a module of its own).
mod blocking {
    use diesel::OptionalExtension as _;
    use diesel::RunQueryDsl as _;
    use diesel::sql_types::{BigInt, Text};

    pub(super) fn sqlite_purge_owner(
        conn: &mut diesel::sqlite::SqliteConnection,
        owner: &str,
        through: i64,
    ) -> diesel::QueryResult<i64> {
        #[derive(diesel::QueryableByName)]
        struct Head {
            #[diesel(sql_type = BigInt)]
            version: i64,
        }

        let head = diesel::sql_query("SELECT version FROM task_sync WHERE user_id = ?1")
            .bind::<Text, _>(owner)
            .get_result::<Head>(conn)
            .optional()?;
        let Some(Head { version: head }) = head.filter(|h| h.version >= through) else {
            return Ok(0);
        };
        let gone = diesel::sql_query(
            "DELETE FROM task_changes WHERE user_id = ?1 AND deleted AND version <= ?2",
        )
        .bind::<Text, _>(owner)
        .bind::<BigInt, _>(through)
        .execute(conn)?;
        let moved = diesel::sql_query(
            "WITH ranked AS MATERIALIZED (
            SELECT task_id, row_number() OVER (ORDER BY version) AS k
            FROM task_changes WHERE user_id = ?1 AND NOT deleted AND version <= ?2)
        UPDATE task_changes
        SET version = ?3 + (SELECT k FROM ranked WHERE ranked.task_id = task_changes.task_id)
        WHERE user_id = ?1 AND task_id IN (SELECT task_id FROM ranked)",
        )
        .bind::<Text, _>(owner)
        .bind::<BigInt, _>(through)
        .bind::<BigInt, _>(head)
        .execute(conn)?;
        diesel::sql_query(
            "UPDATE task_sync SET version = ?3, purged_through = max(purged_through, ?2)
         WHERE user_id = ?1",
        )
        .bind::<Text, _>(owner)
        .bind::<BigInt, _>(through)
        .bind::<BigInt, _>(head + i64::try_from(moved).unwrap_or(0))
        .execute(conn)?;
        Ok(i64::try_from(gone).unwrap_or(i64::MAX))
    }
}

/// Turns the rows of one read into a page, or a reset.
fn page(
    rows: Vec<PgChangeRow>,
    owner: &OwnerId,
    since: i64,
    limit: usize,
) -> Result<Changes, RepoError> {
    let Some(first) = rows.as_slice().first() else {
        return Err(RepoError::Unexpected(anyhow::anyhow!(
            "the change log read returned no head row"
        )));
    };
    let (head, purged) = (first.head, first.purged);
    if since > head || (since > 0 && since < purged) {
        return Ok(Changes::Reset);
    }
    let mut entries: Vec<PgChangeRow> = rows.into_iter().filter(|r| r.version.is_some()).collect();
    let has_more = entries.len() > limit;
    entries.truncate(limit);
    let version = match entries.last() {
        Some(last) if has_more => last.version.unwrap_or(head),
        _ => head,
    };
    let mut tasks = Vec::with_capacity(entries.len());
    let mut deleted = Vec::new();
    for entry in entries {
        match entry.into_row() {
            Ok(row) => tasks.push(into_task(row, owner)?),
            Err(task_id) => deleted.push(TaskId::new(task_id)),
        }
    }
    Ok(Changes::Page(ChangePage {
        tasks,
        deleted,
        version,
        has_more,
    }))
}
