use std::path::PathBuf;
use std::time::Duration;

/// Where the tasks live.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`). It may
    /// carry a password, so it is never printed whole.
    Postgres(String),
    /// An SQLite database file, created on first use.
    Sqlite(PathBuf),
}

impl std::fmt::Debug for DatabaseLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Postgres(url) => write!(f, "Postgres({})", redact_url(url)),
            Self::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
        }
    }
}

impl DatabaseLocation {
    /// A human-readable description safe for logs: the PostgreSQL URL without
    /// its password, or the SQLite path.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Postgres(url) => redact_url(url),
            Self::Sqlite(path) => format!("sqlite:{}", path.display()),
        }
    }
}

/// One redaction helper for the workspace, shared with the verifiers.
pub use tasks_pg::redact_url;

/// How the store connects and how long it waits.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub location: DatabaseLocation,
    /// Most connections held at once.
    pub pool_size: usize,
    /// Longest wait to open a connection or to get one from a busy pool.
    pub connect_timeout: Duration,
    /// Longest a single query may run before the request gets a 503.
    pub query_timeout: Duration,
    /// Cache prepared statements per connection (PostgreSQL). Turn off behind
    /// a transaction-pooling PgBouncer that does not track prepared statements.
    pub prepared_statements: bool,
    /// A streaming standby to serve reads from (`DATABASE_READ_URL`).
    pub read_replica: Option<ReadReplicaConfig>,
    /// SQLite: most writes waiting for the writer's next group commit (and
    /// most writes in one batch); a write finding the queue full waits
    /// within the query timeout, then gets a 503 (`DATABASE_WRITE_QUEUE`).
    pub write_queue: usize,
}

/// Where reads may go besides the primary, and how stale they may be.
#[derive(Clone)]
pub struct ReadReplicaConfig {
    /// The standby's PostgreSQL URL; it may carry a password.
    pub url: String,
    /// A replica that has not replayed the primary's WAL as of this long
    /// ago serves no reads (`DATABASE_READ_MAX_LAG`).
    pub max_lag: Duration,
}

impl std::fmt::Debug for ReadReplicaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadReplicaConfig")
            .field("url", &redact_url(&self.url))
            .field("max_lag", &self.max_lag)
            .finish()
    }
}
