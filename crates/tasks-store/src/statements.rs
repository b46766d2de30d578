//! Statements written as SQL that diesel keeps prepared: the SQLite list
//! and get, and the creates and the PostgreSQL delete.
//!
//! diesel never caches a statement built with `sql_query` (it marks every
//! raw query unsafe to cache), so a list or get written that way was parsed
//! and planned by SQLite on every request: about 93 k instructions each
//! time, 31% of an SQLite `GET /api/tasks/{id}` and 8% of a list (callgrind,
//! bench/README.md); PostgreSQL likewise parsed and planned every create. The list cannot use diesel's query builder either: its
//! bare bound `LIMIT ?`, which SQLite reads while planning, makes SQLite
//! re-prepare the cached statement on every execution (the bundled 3.53,
//! `computeLimitRegisters`); `LIMIT ?3 + 0` is evaluated at run time, with
//! the same plan: a backwards range of `idx_task_user_id (user_id, id)`, or
//! of `idx_task_user_completed (user_id, completed, id)` with a status. So
//! these statements are fixed SQL with typed binds, each its
//! own type with a static query id, which is what diesel's statement cache
//! keys on; their rows are read by position.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz, TimestamptzSqlite};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, RunQueryDsl, SqliteConnection};

use crate::rows::Row;
use crate::timestamps::SqliteTs;

/// The columns every task read selects, in [`Row`] order.
type TaskColumns = (
    BigInt,
    Text,
    Text,
    Nullable<Text>,
    Bool,
    TimestamptzSqlite,
    TimestamptzSqlite,
);

/// A task row as read from SQLite.
pub(crate) type SqliteRow = (
    i64,
    String,
    String,
    Option<String>,
    bool,
    SqliteTs,
    SqliteTs,
);

pub(crate) fn into_row(r: SqliteRow) -> Row {
    (r.0, r.1, r.2, r.3, r.4, r.5.into(), r.6.into())
}

/// A cached statement: `$name` for backend `$db`, returning rows of
/// `$row`, with its binds, and its SQL as text and binds in order (diesel
/// writes each bind's placeholder: `?` on SQLite, `$n` on PostgreSQL, so a
/// value used twice is bound twice).
macro_rules! statement {
    (
        $db:ty, $row:ty, $name:ident { $($field:ident: $rust:ty),* $(,)? }
        $(sql $sql:literal $(bind $bind:ident: $st:ty)?)*
    ) => {
        pub(crate) struct $name<'a> {
            $(pub(crate) $field: $rust,)*
        }

        impl QueryId for $name<'_> {
            type QueryId = $name<'static>;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl Query for $name<'_> {
            type SqlType = $row;
        }

        impl QueryFragment<$db> for $name<'_> {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, $db>) -> QueryResult<()> {
                $(
                    out.push_sql($sql);
                    $(out.push_bind_param::<$st, _>(&self.$bind)?;)?
                )*
                Ok(())
            }
        }
    };
}

/// The task columns as PostgreSQL returns them.
type PgTaskColumns = (
    BigInt,
    Text,
    Text,
    Nullable<Text>,
    Bool,
    Timestamptz,
    Timestamptz,
);

statement!(Sqlite, TaskColumns, List { owner: &'a str, up_to: i64, limit: i64 }
    sql "SELECT id, user_id, title, description, completed, created_at, updated_at FROM tasks WHERE user_id = " bind owner: Text
    sql " AND id <= " bind up_to: BigInt
    sql " ORDER BY id DESC LIMIT " bind limit: BigInt
    sql " + 0"
);

statement!(Sqlite, TaskColumns, ListByStatus { owner: &'a str, up_to: i64, limit: i64, completed: bool }
    sql "SELECT id, user_id, title, description, completed, created_at, updated_at FROM tasks WHERE user_id = " bind owner: Text
    sql " AND id <= " bind up_to: BigInt
    sql " AND completed = " bind completed: Bool
    sql " ORDER BY id DESC LIMIT " bind limit: BigInt
    sql " + 0"
);

statement!(Sqlite, TaskColumns, Get { id: i64, owner: &'a str }
    sql "SELECT id, user_id, title, description, completed, created_at, updated_at FROM tasks WHERE id = " bind id: BigInt
    sql " AND user_id = " bind owner: Text
);

// Read on a plain connection (diesel's synchronous `RunQueryDsl`).
impl RunQueryDsl<SqliteConnection> for List<'_> {}
impl RunQueryDsl<SqliteConnection> for ListByStatus<'_> {}
impl RunQueryDsl<SqliteConnection> for Get<'_> {}

// Creates a task only while its owner holds fewer than the limit. The
// owner's row in `task_counts` is bumped by an upsert whose `WHERE` sees the
// latest committed count under the row lock, in the same statement as the
// insert: concurrent creates cannot overshoot the limit.
statement!(Pg, PgTaskColumns, PgCreate {
    owner: &'a str, limit: i64, title: &'a str, description: Option<&'a str>, now: DateTime<Utc>,
}
    sql "WITH slot AS (INSERT INTO task_counts AS c (user_id, tasks) VALUES (" bind owner: Text
    sql ", 1) ON CONFLICT (user_id) DO UPDATE SET tasks = c.tasks + 1 WHERE c.tasks < " bind limit: BigInt
    sql " RETURNING 1) \
        INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at) \
        SELECT " bind owner: Text
    sql ", " bind title: Text
    sql ", " bind description: Nullable<Text>
    sql ", FALSE, " bind now: Timestamptz
    sql ", " bind now: Timestamptz
    sql " FROM slot \
        RETURNING id, user_id, title, description, completed, created_at, updated_at"
);

// SQLite runs one writer at a time and a write statement takes the write
// lock before it reads, so the count it checks cannot change under it.
statement!(Sqlite, TaskColumns, SqliteCreate {
    owner: &'a str, limit: i64, title: &'a str, description: Option<&'a str>, now: DateTime<Utc>,
}
    sql "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at) \
        SELECT " bind owner: Text
    sql ", " bind title: Text
    sql ", " bind description: Nullable<Text>
    sql ", 0, " bind now: TimestamptzSqlite
    sql ", " bind now: TimestamptzSqlite
    sql " WHERE (SELECT count(*) FROM tasks WHERE user_id = " bind owner: Text
    sql ") < " bind limit: BigInt
    sql " RETURNING id, user_id, title, description, completed, created_at, updated_at"
);

// Deletes a task and gives its slot back to its owner, in one statement;
// the number of tasks deleted (0 or 1).
statement!(Pg, BigInt, PgDelete {
    id: i64, owner: &'a str, accepted: &'a [DateTime<Utc>], unconditional: bool,
}
    sql "WITH gone AS (DELETE FROM tasks WHERE id = " bind id: BigInt
    sql " AND user_id = " bind owner: Text
    sql " AND (updated_at = ANY(" bind accepted: Array<Timestamptz>
    sql ") OR " bind unconditional: Bool
    sql ") RETURNING user_id), \
        freed AS (UPDATE task_counts SET tasks = GREATEST(tasks - 1, 0) \
        FROM gone WHERE task_counts.user_id = gone.user_id RETURNING 1) \
        SELECT count(*) FROM gone"
);

/// The newest `limit` tasks of `owner` with an id up to `up_to`, of one
/// completion state if `completed` is set.
pub(crate) fn list(
    conn: &mut SqliteConnection,
    owner: &str,
    up_to: i64,
    limit: i64,
    completed: Option<bool>,
) -> QueryResult<Vec<SqliteRow>> {
    match completed {
        None => List {
            owner,
            up_to,
            limit,
        }
        .load(conn),
        Some(completed) => ListByStatus {
            owner,
            up_to,
            limit,
            completed,
        }
        .load(conn),
    }
}

/// Task `id` if `owner` owns it.
pub(crate) fn get(
    conn: &mut SqliteConnection,
    owner: &str,
    id: i64,
) -> QueryResult<Option<SqliteRow>> {
    use diesel::OptionalExtension as _;
    Get { id, owner }.get_result(conn).optional()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use diesel::Connection as _;
    use diesel::connection::InstrumentationEvent;

    use super::*;

    /// Each statement is prepared once per connection, whatever its binds,
    /// and reads what it should.
    #[tokio::test(flavor = "current_thread")]
    async fn statements_are_prepared_once_and_read_by_position() {
        let (_store, dir) = crate::writer::tests::store("statements").await;
        let mut conn =
            SqliteConnection::establish(&dir.join("tasks.db").to_string_lossy()).unwrap();
        diesel::sql_query(
            "INSERT INTO tasks (id, user_id, title, description, completed, created_at, updated_at) \
             VALUES (1, 'a', 'one', NULL, 0, '2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00.5+00:00'), \
                    (2, 'a', 'two', 'd', 1, '2026-01-02 00:00:00+00:00', '2026-01-02 00:00:00+00:00'), \
                    (3, 'b', 'other', NULL, 0, '2026-01-03 00:00:00+00:00', '2026-01-03 00:00:00+00:00')",
        )
        .execute(&mut conn)
        .unwrap();
        let (cached, started) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c, s) = (cached.clone(), started.clone());
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| match event {
            InstrumentationEvent::CacheQuery { .. } => {
                c.fetch_add(1, Ordering::Relaxed);
            }
            InstrumentationEvent::StartQuery { .. } => {
                s.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        });
        for round in 0..3 {
            let all = list(&mut conn, "a", i64::MAX, 100, None).unwrap();
            assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 1]);
            assert_eq!(all[1].2, "one");
            assert_eq!(all[0].3.as_deref(), Some("d"));
            assert_eq!(all[1].6.0.timestamp_subsec_millis(), 500);
            assert_eq!(list(&mut conn, "a", 1, 100 - round, None).unwrap().len(), 1);
            assert_eq!(list(&mut conn, "a", i64::MAX, 1, None).unwrap().len(), 1);
            let done = list(&mut conn, "a", i64::MAX, 100, Some(true)).unwrap();
            assert_eq!(done.iter().map(|r| r.0).collect::<Vec<_>>(), [2]);
            assert_eq!(
                get(&mut conn, "a", 2).unwrap().map(|r| r.1),
                Some("a".to_owned())
            );
            assert!(get(&mut conn, "a", 3 + round).unwrap().is_none());
        }
        assert_eq!(started.load(Ordering::Relaxed), 18);
        assert_eq!(
            cached.load(Ordering::Relaxed),
            3,
            "list, list by status, get"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
