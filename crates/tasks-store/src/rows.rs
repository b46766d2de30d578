//! The row mapping: the one column list every query selects, and the way
//! back from a row to a domain [`Task`].

use chrono::{DateTime, Utc};
use tasks_domain::{Description, OwnerId, Task, TaskId, Title};
use tasks_ports::RepoError;

use crate::timestamps::SqliteTs;

/// A task row as every query selects it, in column order.
pub(crate) type Row = (
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
pub(crate) use columns;

/// The caller's task `id` in `$t`, if its `updated_at` is one of `accepted`
/// or the write is `unconditional`: the `WHERE` of every conditional write,
/// so ownership and the `If-Match` check are one clause of the statement
/// itself (one statement shape for both cases).
macro_rules! owned_if_current {
    ($t:ident, $id:expr, $owner:expr, $accepted:expr, $unconditional:expr) => {
        $t::table
            .filter($t::id.eq($id.get()))
            .filter($t::user_id.eq($owner.as_str()))
            .filter(
                $t::updated_at
                    .eq_any($accepted)
                    .or($unconditional.into_sql::<diesel::sql_types::Bool>()),
            )
    };
}
pub(crate) use owned_if_current;

/// Converts a row selected for `owner`. The query already filtered by owner;
/// comparing again (instead of re-parsing the id) is cheap and turns a
/// mis-written query into an error rather than a leak.
///
/// A stored title or description that today's rules reject (written behind
/// the service's back, or under an older release's rules) is logged with the
/// task id and served as stored: one odd row must not fail the whole list,
/// and the user can still see, fix or delete it.
pub(crate) fn into_task(row: Row, owner: &OwnerId) -> Result<Task, RepoError> {
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
    if !Title::accepts(&title) {
        odd("title");
    }
    if description
        .as_deref()
        .is_some_and(|d| !Description::accepts(d))
    {
        odd("description");
    }
    let title = Title::from_storage(title);
    let description = description.map(Description::from_storage);
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

pub(crate) fn into_tasks(rows: Vec<Row>, owner: &OwnerId) -> Result<Vec<Task>, RepoError> {
    rows.into_iter().map(|row| into_task(row, owner)).collect()
}

/// A row of the change-log read (`changes.rs`), per backend: the owner's
/// head version and purge mark on every row, then one entry of the page
/// (all `NULL` when the page is empty), the task's columns `NULL` for a
/// tombstone.
macro_rules! change_row {
    ($name:ident, $ts:ty, $rust_ts:ty) => {
        #[derive(diesel::QueryableByName)]
        pub(crate) struct $name {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            pub(crate) head: i64,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            pub(crate) purged: i64,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
            pub(crate) version: Option<i64>,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bool>)]
            deleted: Option<bool>,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
            task_id: Option<i64>,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
            id: Option<i64>,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            user_id: Option<String>,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            title: Option<String>,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            description: Option<String>,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bool>)]
            completed: Option<bool>,
            #[diesel(sql_type = diesel::sql_types::Nullable<$ts>)]
            created_at: Option<$rust_ts>,
            #[diesel(sql_type = diesel::sql_types::Nullable<$ts>)]
            updated_at: Option<$rust_ts>,
        }
    };
}
change_row!(PgChangeRow, diesel::sql_types::Timestamptz, DateTime<Utc>);
change_row!(
    SqliteChangeRow,
    diesel::sql_types::TimestamptzSqlite,
    SqliteTs
);

impl From<SqliteChangeRow> for PgChangeRow {
    fn from(r: SqliteChangeRow) -> Self {
        Self {
            head: r.head,
            purged: r.purged,
            version: r.version,
            deleted: r.deleted,
            task_id: r.task_id,
            id: r.id,
            user_id: r.user_id,
            title: r.title,
            description: r.description,
            completed: r.completed,
            created_at: r.created_at.map(Into::into),
            updated_at: r.updated_at.map(Into::into),
        }
    }
}

impl PgChangeRow {
    /// The task's row, or the id of a deleted task (a tombstone, or a
    /// change whose task row is gone).
    pub(crate) fn into_row(self) -> Result<Row, i64> {
        let task_id = self.task_id.unwrap_or_default();
        if self.deleted != Some(false) {
            return Err(task_id);
        }
        joined_row(
            self.id,
            self.user_id,
            self.title,
            self.description,
            self.completed,
            self.created_at,
            self.updated_at,
        )
        .ok_or(task_id)
    }
}

/// A task row read through an outer join, where every column may be NULL:
/// the row when the task was there (every NOT NULL column present), `None`
/// when the join found no task.
pub(crate) fn joined_row(
    id: Option<i64>,
    user_id: Option<String>,
    title: Option<String>,
    description: Option<String>,
    completed: Option<bool>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
) -> Option<Row> {
    Some((
        id?,
        user_id?,
        title?,
        description,
        completed?,
        created_at?,
        updated_at?,
    ))
}

#[derive(diesel::QueryableByName)]
pub(crate) struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) n: i64,
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
}
