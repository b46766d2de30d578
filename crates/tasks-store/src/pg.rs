//! Opening diesel-async PostgreSQL connections over tasks-pg's TLS set-up.

use std::time::Duration;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use tasks_pg::{MakeRustlsConnect, PgTarget};
use tokio_postgres::tls::MakeTlsConnect;

/// The connection half of a TLS-capable tokio-postgres connection.
type PgConnection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <MakeRustlsConnect as MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

/// Everything needed to open connections to one server, parsed once.
#[derive(Clone)]
pub struct PgConnector {
    target: PgTarget,
}

impl PgConnector {
    /// Parses `url` and prepares TLS.
    ///
    /// # Errors
    /// The URL is not a valid PostgreSQL connection string, or names an
    /// `sslmode` this build does not know.
    pub fn new(url: &str, connect_timeout: Duration) -> anyhow::Result<Self> {
        Self::for_var(url, "DATABASE_URL", connect_timeout)
    }

    /// As [`Self::new`], for the URL of the variable `var` (named in errors).
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn for_var(url: &str, var: &str, connect_timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            target: PgTarget::parse(url, var, connect_timeout, "tasks-server")?,
        })
    }

    /// Opens a bare tokio-postgres client (its connection driven by a task
    /// of its own), for the replica's LSN probes: simple-protocol queries
    /// that work through any pooler.
    ///
    /// # Errors
    /// Connecting or the TLS handshake failed.
    pub async fn client(&self) -> Result<tokio_postgres::Client, ConnectionError> {
        let (client, connection) = self.open().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL probe connection closed");
            }
        });
        Ok(client)
    }

    /// The TLS set-up, for cancel requests.
    #[must_use]
    pub fn tls(&self) -> tasks_pg::MakeRustlsConnect {
        self.target.tls.clone()
    }

    /// Opens one connection.
    ///
    /// # Errors
    /// Connecting or the TLS handshake failed.
    pub async fn connect(&self) -> Result<AsyncPgConnection, ConnectionError> {
        let (client, connection) = self.open().await?;
        AsyncPgConnection::try_from_client_and_connection(client, connection).await
    }

    async fn open(&self) -> Result<(tokio_postgres::Client, PgConnection), ConnectionError> {
        self.target
            .config
            .connect(self.target.tls.clone())
            .await
            .map_err(|e| ConnectionError::BadConnection(e.to_string()))
    }

    /// Opens one connection through a transaction-pooling PgBouncer.
    /// diesel-async sets the session up with prepared statements; behind
    /// PgBouncer their prepare and execute could land on different servers,
    /// so the set-up runs inside one transaction, which pins one server.
    ///
    /// # Errors
    /// Connecting, the TLS handshake or the set-up failed.
    pub async fn connect_pooled(&self) -> Result<AsyncPgConnection, ConnectionError> {
        let (client, connection) = self.open().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection closed");
            }
        });
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
        let mut conn = AsyncPgConnection::try_from(client).await?;
        diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, "COMMIT")
            .await
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    }
}
