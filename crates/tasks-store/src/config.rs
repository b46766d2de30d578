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

/// The URL with any password replaced by `***` and the query string dropped.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    let Some((scheme, rest)) = without_query.split_once("://") else {
        return "<unparseable url>".to_owned();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{user}:***@{host}")
            } else {
                format!("{user}@{host}")
            }
        }
        None => authority.to_owned(),
    };
    format!("{scheme}://{host}/{path}")
}

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_and_query() {
        assert_eq!(
            redact_url("postgres://alice:s3cret@db.example:5432/app?sslmode=require"),
            "postgres://alice:***@db.example:5432/app"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(
            redact_url("postgresql://u:p:q@h/db"),
            "postgresql://u:***@h/db"
        );
        assert_eq!(redact_url("nonsense"), "<unparseable url>");
    }
}
