//! Translating driver and pool errors into the port's two failure kinds.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::PoolError as ManagerError;
use diesel_async::pooled_connection::deadpool::PoolError;
use tasks_ports::RepoError;

/// Any failure to get a connection means the database is out of reach or
/// saturated: both are worth retrying.
pub(crate) fn pool_error(err: PoolError) -> RepoError {
    let detail = match &err {
        PoolError::Timeout(kind) => format!("timed out waiting for a connection ({kind:?})"),
        PoolError::Backend(ManagerError::ConnectionError(e)) => {
            format!("could not connect: {e}")
        }
        PoolError::Backend(ManagerError::QueryError(e)) => {
            format!("connection check failed: {e}")
        }
        PoolError::Closed => "the connection pool is closed".to_owned(),
        PoolError::NoRuntimeSpecified => "no runtime for pool timeouts".to_owned(),
        PoolError::PostCreateHook(e) => format!("connection set-up failed: {e}"),
    };
    RepoError::Unavailable(anyhow::anyhow!(detail))
}

/// Errors while a query ran: connection-level problems, timeouts and a full
/// disk are `Unavailable`, everything else `Unexpected`.
pub(crate) fn query_error(err: DieselError) -> RepoError {
    if is_disk_full(&err) {
        RepoError::Unavailable(anyhow::Error::new(err).context("the database is out of disk space"))
    } else if is_transient(&err) {
        RepoError::Unavailable(anyhow::Error::new(err).context("the database did not answer"))
    } else {
        RepoError::Unexpected(anyhow::Error::new(err).context("query failed"))
    }
}

/// SQLite's `SQLITE_FULL` and PostgreSQL's SQLSTATE 53100 (`disk_full`) and
/// the "No space left on device" failures of file writes; diesel passes
/// neither code through, only the message.
pub(crate) fn is_disk_full(err: &DieselError) -> bool {
    const FULL: &[&str] = &[
        "database or disk is full",
        "No space left on device",
        "could not extend file",
        "disk full",
    ];
    match err {
        DieselError::DatabaseError(_, info) => {
            let message = info.message();
            FULL.iter().any(|needle| message.contains(needle))
        }
        _ => false,
    }
}

/// Whether the connection that produced `err` can no longer be trusted: it
/// is closed, broken mid-protocol, or its transaction state is unknown.
/// Anything else (a constraint, a cancelled or timed-out statement, a full
/// disk) leaves it idle and reusable.
pub(crate) fn breaks_connection(err: &DieselError) -> bool {
    match err {
        DieselError::DatabaseError(kind, info) => {
            matches!(
                kind,
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand
            ) || {
                let message = info.message();
                [
                    "terminating connection",
                    "connection",
                    "the database system is",
                ]
                .iter()
                .any(|needle| message.contains(needle))
            }
        }
        DieselError::BrokenTransactionManager | DieselError::AlreadyInTransaction => true,
        _ => false,
    }
}

fn is_transient(err: &DieselError) -> bool {
    match err {
        DieselError::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::SerializationFailure
            | DatabaseErrorKind::ReadOnlyTransaction => true,
            _ => {
                // SQLSTATE classes 08 (connection), 53 (resources), 57
                // (operator intervention) reach diesel as `Unknown` with only
                // their message; SQLite reports lock contention the same way.
                const TRANSIENT: &[&str] = &[
                    "terminating connection",
                    "the database system is",
                    "too many clients",
                    "too many connections",
                    "canceling statement due to",
                    "connection",
                    "disk I/O error",
                    "unable to open database",
                    "out of memory",
                    "out of shared memory",
                    "lock timeout",
                ];
                let message = info.message();
                TRANSIENT.iter().any(|needle| message.contains(needle)) || is_busy(err)
            }
        },
        DieselError::BrokenTransactionManager => true,
        _ => false,
    }
}

/// SQLite's lock contention: "database is locked" (`SQLITE_BUSY`) and
/// "database table is locked" (`SQLITE_LOCKED`), which reach diesel as
/// `Unknown` with only their message.
pub(crate) fn is_busy(err: &DieselError) -> bool {
    matches!(err, DieselError::DatabaseError(_, info)
        if ["database is locked", "database table is locked"]
            .iter()
            .any(|needle| info.message().contains(needle)))
}
