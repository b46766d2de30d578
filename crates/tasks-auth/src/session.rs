//! Better Auth opaque session tokens (the `bearer()` plugin), checked against
//! the `session` table Better Auth keeps in its PostgreSQL database.
//!
//! Clients send either the raw token (as stored in `session.token`) or the
//! signed form Better Auth's client stores, `<token>.<signature>`, possibly
//! percent-encoded (as in its cookie). The signature is standard base64 with
//! padding of HMAC-SHA256(key = BETTER_AUTH_SECRET as UTF-8, message = token)
//! (better-call `signCookieValue`); like Better Auth's bearer plugin, the
//! url-safe alphabet and missing padding are accepted too.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use deadpool::managed::{self, Metrics, Object, RecycleError, RecycleResult};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tasks_domain::OwnerId;
use tasks_pg::{MakeRustlsConnect, PgTarget};
use tasks_ports::{TokenVerifier, VerifyError};
use tokio_postgres::types::Type;

use crate::cache::{ExpiringCache, token_hash};
use crate::claims::{Verified, precheck};

/// The names Better Auth's adapters give the session table and its columns:
/// its own migrations and the Kysely/Prisma adapters use `session` with
/// camelCase columns; the Drizzle adapter is often configured with
/// `usePlural` (`sessions`) and snake_case columns (`user_id`, `expires_at`).
/// Searched in this order unless overridden (`BETTER_AUTH_SESSION_*`).
const TABLE_CANDIDATES: &[&str] = &["session", "sessions", "Session"];
const TOKEN_CANDIDATES: &[&str] = &["token"];
const USER_ID_CANDIDATES: &[&str] = &["userId", "user_id"];
const EXPIRES_AT_CANDIDATES: &[&str] = &["expiresAt", "expires_at"];

/// Every column of every candidate table in the schemas of the connection's
/// `search_path`, in search-path order. Like the lookup, one unnamed
/// statement.
const DISCOVERY_QUERY: &str = "SELECT c.table_schema::text, c.table_name::text, \
    c.column_name::text, c.data_type::text \
    FROM information_schema.columns c \
    WHERE c.table_schema::name = ANY (current_schemas(false)) AND c.table_name::text = ANY ($1) \
    ORDER BY array_position(current_schemas(false), c.table_schema::name), c.table_name, c.ordinal_position";

/// Longest raw session token accepted (Better Auth's are 32 characters).
const MAX_SESSION_TOKEN_BYTES: usize = 255;

/// Answer given for a session the database does not know or has expired.
const UNKNOWN_SESSION: &str = "session is unknown or has expired";

/// Where Better Auth's sessions live and how long a check may be reused.
#[derive(Clone)]
pub struct SessionConfig {
    /// `postgres://...` of Better Auth's database (`BETTER_AUTH_DATABASE_URL`).
    pub database_url: String,
    /// `BETTER_AUTH_SECRET`: when set, signed tokens must carry a valid signature.
    pub secret: Option<String>,
    /// Most connections to Better Auth's database (`BETTER_AUTH_DATABASE_POOL_SIZE`).
    pub pool_size: usize,
    pub connect_timeout: Duration,
    /// Longest a lookup may take; also set on the server as
    /// `statement_timeout` and `lock_timeout` of every connection.
    pub query_timeout: Duration,
    /// How long a successful check is reused (`SESSION_CACHE_TTL_SECS`), so a
    /// signed-out session stops working at most this long after sign-out.
    pub cache_ttl: Duration,
    /// How long an unknown or expired session token is answered without
    /// asking the database again (`SESSION_NEGATIVE_CACHE_TTL_SECS`); zero
    /// turns it off.
    pub negative_cache_ttl: Duration,
    /// Most rejected tokens remembered (by SHA-256).
    pub negative_cache_size: usize,
    /// Names to use instead of discovering them (`BETTER_AUTH_SESSION_*`).
    pub schema: SessionSchema,
}

/// Explicit names of the session table and its columns; each `None` is
/// discovered among Better Auth's usual names. An explicit name must exist
/// too: it is checked against the catalog like a discovered one.
#[derive(Debug, Clone, Default)]
pub struct SessionSchema {
    /// `BETTER_AUTH_SESSION_TABLE`, a table in the connection's `search_path`.
    pub table: Option<String>,
    /// `BETTER_AUTH_SESSION_TOKEN_COLUMN`.
    pub token_column: Option<String>,
    /// `BETTER_AUTH_SESSION_USER_ID_COLUMN`.
    pub user_id_column: Option<String>,
    /// `BETTER_AUTH_SESSION_EXPIRES_AT_COLUMN`.
    pub expires_at_column: Option<String>,
}

impl SessionConfig {
    #[must_use]
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            secret: None,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(30),
            negative_cache_ttl: Duration::from_secs(10),
            negative_cache_size: 10_000,
            schema: SessionSchema::default(),
        }
    }
}

impl fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("database_url", &"***")
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .field("cache_ttl", &self.cache_ttl)
            .field("negative_cache_ttl", &self.negative_cache_ttl)
            .field("negative_cache_size", &self.negative_cache_size)
            .field("schema", &self.schema)
            .finish()
    }
}

struct Manager {
    config: tokio_postgres::Config,
    /// `config` plus `statement_timeout` / `lock_timeout` as startup options.
    with_timeouts: tokio_postgres::Config,
    /// Cleared the first time the server (a pooler) refuses startup options.
    server_timeouts: AtomicBool,
    tls: MakeRustlsConnect,
}

impl Manager {
    async fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "session database connection closed");
            }
        });
        Ok(client)
    }
}

impl managed::Manager for Manager {
    type Type = tokio_postgres::Client;
    type Error = tokio_postgres::Error;

    async fn create(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        if !self.server_timeouts.load(Ordering::Relaxed) {
            return self.connect(&self.config).await;
        }
        match self.connect(&self.with_timeouts).await {
            Err(e)
                if e.as_db_error()
                    .is_some_and(|d| d.message().contains("startup parameter")) =>
            {
                // PgBouncer (without `options` in ignore_startup_parameters)
                // refuses them. The client-side timeout and the cancel
                // request still bound every lookup.
                self.server_timeouts.store(false, Ordering::Relaxed);
                tracing::warn!(
                    "Better Auth's database (or its pooler) refuses startup options: session lookups run without a server-side statement_timeout/lock_timeout (set them on the database role instead; see docs/OPERATIONS.md)"
                );
                self.connect(&self.config).await
            }
            other => other,
        }
    }

    async fn recycle(
        &self,
        client: &mut tokio_postgres::Client,
        _: &Metrics,
    ) -> RecycleResult<tokio_postgres::Error> {
        if client.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

/// Checks Better Auth session tokens in its database.
pub struct SessionVerifier {
    pool: managed::Pool<Manager>,
    tls: MakeRustlsConnect,
    secret: Option<Vec<u8>>,
    connect_timeout: Duration,
    query_timeout: Duration,
    cache_ttl: Duration,
    negative_ttl: Duration,
    /// Tokens the database said it does not know (or has expired).
    rejected: ExpiringCache<()>,
    schema: SessionSchema,
    /// The lookup statement, once the table and columns are known.
    query: tokio::sync::OnceCell<String>,
}

/// Why the session table could not be found.
#[derive(Debug)]
pub enum DiscoveryError {
    /// The database could not be asked; discovery is retried on next use.
    Unreachable(anyhow::Error),
    /// The database answered and nothing matches: a configuration error.
    /// The message names what was looked for and what was found.
    NoMatch(String),
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "Better Auth's database is unreachable: {e:#}"),
            Self::NoMatch(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DiscoveryError {}

impl SessionVerifier {
    /// Prepares a small pool; no connection is opened until the first check.
    ///
    /// # Errors
    /// The URL is not a valid PostgreSQL URL, or TLS cannot be set up.
    pub fn new(config: &SessionConfig) -> anyhow::Result<Self> {
        let target = PgTarget::parse(
            &config.database_url,
            "BETTER_AUTH_DATABASE_URL",
            config.connect_timeout,
            "tasks-server-sessions",
        )?;
        let timeout_ms = config.query_timeout.as_millis().max(1);
        let mut with_timeouts = target.config.clone();
        let options = format!("-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}");
        match target.config.get_options() {
            Some(existing) if !existing.is_empty() => {
                with_timeouts.options(format!("{existing} {options}"))
            }
            _ => with_timeouts.options(options),
        };
        let manager = Manager {
            config: target.config,
            with_timeouts,
            server_timeouts: AtomicBool::new(true),
            tls: target.tls.clone(),
        };
        let pool = managed::Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(config.query_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .context("building the session database pool")?;
        let negative_size = if config.negative_cache_ttl.is_zero() {
            0
        } else {
            config.negative_cache_size
        };
        Ok(Self {
            pool,
            tls: target.tls,
            secret: config.secret.as_ref().map(|s| s.as_bytes().to_vec()),
            connect_timeout: config.connect_timeout,
            query_timeout: config.query_timeout,
            cache_ttl: config.cache_ttl,
            negative_ttl: config.negative_cache_ttl,
            rejected: ExpiringCache::new(negative_size),
            schema: config.schema.clone(),
            query: tokio::sync::OnceCell::new(),
        })
    }

    /// Finds the session table and its columns (once; a failure to reach
    /// the database is retried on the next call) and returns a description
    /// for the log, e.g. `"public"."sessions" ("token", "user_id", "expires_at")`.
    ///
    /// # Errors
    /// [`DiscoveryError::Unreachable`] when the database cannot be asked,
    /// [`DiscoveryError::NoMatch`] when no table has the columns looked for.
    pub async fn discover(&self) -> Result<String, DiscoveryError> {
        let sql = self
            .query
            .get_or_try_init(|| async {
                let (sql, description) = self.discover_uncached().await?;
                tracing::info!(session_table = %description, "Better Auth session table found");
                Ok::<_, DiscoveryError>(sql)
            })
            .await?;
        Ok(describe_query(sql))
    }

    async fn discover_uncached(&self) -> Result<(String, String), DiscoveryError> {
        let unreachable = |e: anyhow::Error| DiscoveryError::Unreachable(e);
        let tables = candidates(self.schema.table.as_deref(), TABLE_CANDIDATES);
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| unreachable(anyhow::anyhow!("session database: {e}")))?;
        let names: Vec<String> = tables.iter().map(|t| (*t).to_owned()).collect();
        let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] =
            [(&names, Type::TEXT_ARRAY)];
        let rows = match tokio::time::timeout(
            self.query_timeout,
            client.query_typed(DISCOVERY_QUERY, &params),
        )
        .await
        {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                return Err(unreachable(
                    anyhow::Error::new(e).context("reading information_schema.columns"),
                ));
            }
            Err(_) => {
                // Not cancelled: a catalog read holds no lock worth waiting
                // for; the connection is simply not reused.
                drop(Object::take(client));
                return Err(unreachable(anyhow::anyhow!(
                    "reading information_schema.columns timed out"
                )));
            }
        };
        let columns: Vec<CatalogColumn> = rows
            .iter()
            .map(|r| {
                Ok(CatalogColumn {
                    schema: r.try_get(0)?,
                    table: r.try_get(1)?,
                    column: r.try_get(2)?,
                    data_type: r.try_get(3)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| unreachable(anyhow::Error::new(e).context("reading the catalog")))?;
        choose_table(&columns, &self.schema).map_err(DiscoveryError::NoMatch)
    }

    /// Verifies a session token; `valid_until` is the earlier of the
    /// session's expiry and now + the cache TTL.
    ///
    /// # Errors
    /// [`VerifyError::Rejected`] for a malformed, badly signed, unknown or
    /// expired session; [`VerifyError::Unavailable`] when the database cannot
    /// be asked.
    pub async fn verify_detailed(&self, token: &str) -> Result<Verified, VerifyError> {
        precheck(token)?;
        let raw = session_token(token, self.secret.as_deref(), false)?;
        self.verify_raw(&raw).await
    }

    /// Verifies the value of Better Auth's session cookie: only the signed
    /// form (`<token>.<signature>`, usually percent-encoded), checked with
    /// `BETTER_AUTH_SECRET`. A raw token in a cookie is refused: a cookie
    /// can be planted by a sibling subdomain, a signature cannot.
    ///
    /// # Errors
    /// As [`SessionVerifier::verify_detailed`]; also a cookie without a
    /// valid signature, or no secret configured.
    pub async fn verify_cookie_detailed(&self, value: &str) -> Result<Verified, VerifyError> {
        precheck(value)?;
        if self.secret.is_none() {
            return Err(VerifyError::rejected(
                "session cookies cannot be checked: BETTER_AUTH_SECRET is not set on the tasks service",
            ));
        }
        let raw = session_token(value, self.secret.as_deref(), true)?;
        self.verify_raw(&raw).await
    }

    async fn verify_raw(&self, raw: &str) -> Result<Verified, VerifyError> {
        let key = token_hash(raw);
        if self.rejected.get(&key).is_some() {
            return Err(VerifyError::rejected(UNKNOWN_SESSION));
        }
        if let Err(e) = self.discover().await {
            return Err(match e {
                DiscoveryError::Unreachable(e) => VerifyError::Unavailable(e),
                DiscoveryError::NoMatch(m) => VerifyError::Misconfigured(anyhow::anyhow!(m)),
            });
        }
        let row = self.lookup(raw).await?;
        let unavailable = |e: anyhow::Error| VerifyError::Unavailable(e);
        let now = SystemTime::now();
        let found = match row {
            None => None,
            Some(row) => {
                let user_id: Option<String> = row.try_get(0).map_err(|e| {
                    unavailable(anyhow::Error::new(e).context("reading the session's user id"))
                })?;
                let expires_at: Option<SystemTime> = row.try_get(1).map_err(|e| {
                    unavailable(anyhow::Error::new(e).context(
                        "reading the session's expiry (expected timestamptz or timestamp)",
                    ))
                })?;
                // A NULL in either (a schema without NOT NULL) is no session.
                let (Some(user_id), Some(expires_at)) = (user_id, expires_at) else {
                    self.rejected.insert_for(key, (), self.negative_ttl);
                    return Err(VerifyError::rejected(UNKNOWN_SESSION));
                };
                (expires_at > now).then_some((user_id, expires_at))
            }
        };
        let Some((user_id, expires_at)) = found else {
            self.rejected.insert_for(key, (), self.negative_ttl);
            return Err(VerifyError::rejected(UNKNOWN_SESSION));
        };
        let owner = OwnerId::parse(&user_id).map_err(|e| {
            VerifyError::rejected(format!("session user id is not acceptable: {e}"))
        })?;
        Ok(Verified {
            owner,
            valid_until: expires_at.min(now + self.cache_ttl),
        })
    }

    /// Runs the lookup under the query timeout. On a timeout the query is
    /// cancelled on the server before anything else happens to its
    /// connection, so that no backend keeps running (or waiting on a lock)
    /// for a request that has given up.
    async fn lookup(&self, raw: &str) -> Result<Option<tokio_postgres::Row>, VerifyError> {
        let unavailable = |e: anyhow::Error| VerifyError::Unavailable(e);
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| unavailable(anyhow::anyhow!("session database: {e}")))?;
        let sql = self.query.get().map(String::as_str).ok_or_else(|| {
            VerifyError::Unavailable(anyhow::anyhow!("session table not discovered yet"))
        })?;
        let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] = [(&raw, Type::TEXT)];
        // `discard`: the connection may be mid-query or broken, never hand it
        // out again.
        let (result, discard) = {
            let mut query = std::pin::pin!(client.query_typed_opt(sql, &params));
            match tokio::time::timeout(self.query_timeout, &mut query).await {
                Ok(Ok(row)) => (Ok(row), false),
                Ok(Err(e)) => {
                    // A server-side error (statement or lock timeout) leaves
                    // the connection usable; anything else may not have.
                    let keep = e.as_db_error().is_some() && !client.is_closed();
                    let error = anyhow::Error::new(e).context("looking up the session");
                    (Err(error), !keep)
                }
                Err(_) => {
                    let cancel = client.cancel_token();
                    let sent = tokio::time::timeout(
                        self.connect_timeout,
                        cancel.cancel_query(self.tls.clone()),
                    )
                    .await;
                    if !matches!(sent, Ok(Ok(()))) {
                        tracing::warn!("could not cancel a timed-out session lookup");
                    }
                    // Wait (bounded) for the server to acknowledge: the
                    // backend is then idle again and the connection can be
                    // reused, so the pool never opens a connection next to
                    // one that is still busy.
                    let acknowledged =
                        match tokio::time::timeout(self.connect_timeout, &mut query).await {
                            Ok(Ok(_)) => true,
                            Ok(Err(e)) => e.as_db_error().is_some(),
                            Err(_) => false,
                        };
                    let error = anyhow::anyhow!("looking up the session timed out");
                    (Err(error), !acknowledged)
                }
            }
        };
        if discard {
            drop(Object::take(client));
        }
        result.map_err(unavailable)
    }
}

#[async_trait]
impl TokenVerifier for SessionVerifier {
    async fn verify(&self, token: &str) -> Result<OwnerId, VerifyError> {
        self.verify_detailed(token).await.map(|v| v.owner)
    }

    async fn verify_cookie(&self, value: &str) -> Result<OwnerId, VerifyError> {
        self.verify_cookie_detailed(value).await.map(|v| v.owner)
    }
}

struct CatalogColumn {
    schema: String,
    table: String,
    column: String,
    data_type: String,
}

fn candidates<'a>(explicit: Option<&'a str>, defaults: &'a [&'a str]) -> Vec<&'a str> {
    explicit.map_or_else(|| defaults.to_vec(), |name| vec![name])
}

/// `"name"` with embedded quotes doubled: a PostgreSQL quoted identifier.
/// Every name quoted here comes from the catalog (it exists exactly so),
/// never straight from configuration or a request.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The lookup statement for the first candidate table (in search-path, then
/// candidate order) that has a token, a user id and an expiry column, with a
/// description for the log; or a message naming what was looked for and
/// what was found.
///
/// The lookup is always parameterized, sent as an unnamed statement with its
/// parameter type given (`query_typed`): one round trip, and nothing that
/// outlives the statement on the server, so it works behind a PgBouncer in
/// transaction mode. Expiry is compared in Rust against the current UTC
/// instant: the expiry column is read as an instant whether it is
/// `timestamptz` or `timestamp` (whose value is taken as UTC, as Better
/// Auth's ORMs write it), never converted through the session's time zone.
/// The user id is read as text whatever its type (`text`, `uuid`, ...).
fn choose_table(
    columns: &[CatalogColumn],
    schema: &SessionSchema,
) -> Result<(String, String), String> {
    let tables = candidates(schema.table.as_deref(), TABLE_CANDIDATES);
    let token = candidates(schema.token_column.as_deref(), TOKEN_CANDIDATES);
    let user_id = candidates(schema.user_id_column.as_deref(), USER_ID_CANDIDATES);
    let expires_at = candidates(schema.expires_at_column.as_deref(), EXPIRES_AT_CANDIDATES);
    let mut found: Vec<String> = Vec::new();
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for c in columns {
        if !seen.contains(&(c.schema.as_str(), c.table.as_str())) {
            seen.push((&c.schema, &c.table));
        }
    }
    // Candidate order first among tables of the same schema.
    seen.sort_by_key(|(s, t)| {
        let schema_pos = columns
            .iter()
            .position(|c| c.schema == *s)
            .unwrap_or(usize::MAX);
        let table_pos = tables.iter().position(|n| n == t).unwrap_or(usize::MAX);
        (schema_pos, table_pos)
    });
    for (table_schema, table) in seen {
        let cols: Vec<&CatalogColumn> = columns
            .iter()
            .filter(|c| c.schema == table_schema && c.table == table)
            .collect();
        let pick = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| cols.iter().find(|c| c.column == *n).copied())
        };
        let qualified = format!("{}.{}", quote_ident(table_schema), quote_ident(table));
        match (pick(&token), pick(&user_id), pick(&expires_at)) {
            (Some(t), Some(u), Some(e)) => {
                if !e.data_type.starts_with("timestamp") {
                    return Err(format!(
                        "Better Auth session table {qualified}: column {} is {}, expected timestamptz or timestamp (set BETTER_AUTH_SESSION_EXPIRES_AT_COLUMN to the session expiry column)",
                        quote_ident(&e.column),
                        e.data_type
                    ));
                }
                let sql = format!(
                    "SELECT {}::text, {} FROM {qualified} WHERE {} = $1",
                    quote_ident(&u.column),
                    quote_ident(&e.column),
                    quote_ident(&t.column)
                );
                return Ok((sql.clone(), describe_query(&sql)));
            }
            _ => {
                let names: Vec<String> = cols.iter().map(|c| quote_ident(&c.column)).collect();
                found.push(format!("{qualified} has columns {}", names.join(", ")));
            }
        }
    }
    let list = |names: &[&str]| {
        names
            .iter()
            .map(|n| quote_ident(n))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let found = if found.is_empty() {
        "no such table in the schemas of the connection's search_path".to_owned()
    } else {
        found.join("; ")
    };
    Err(format!(
        "no Better Auth session table found in BETTER_AUTH_DATABASE_URL's database: looked for a table {} (BETTER_AUTH_SESSION_TABLE) with columns {} (BETTER_AUTH_SESSION_TOKEN_COLUMN), {} (BETTER_AUTH_SESSION_USER_ID_COLUMN) and {} (BETTER_AUTH_SESSION_EXPIRES_AT_COLUMN); found: {found}. Set those variables to your schema's names, or point BETTER_AUTH_DATABASE_URL at Better Auth's database",
        list(&tables),
        list(&token),
        list(&user_id),
        list(&expires_at),
    ))
}

/// `"public"."session" ("token", "userId", "expiresAt")` from the lookup statement.
fn describe_query(sql: &str) -> String {
    sql.strip_prefix("SELECT ").map_or_else(
        || sql.to_owned(),
        |rest| {
            let (cols, rest) = rest.split_once(" FROM ").unwrap_or((rest, ""));
            let (table, token) = rest.split_once(" WHERE ").unwrap_or((rest, ""));
            let token = token.trim_end_matches(" = $1");
            format!("{table} ({token}, {})", cols.replace("::text", ""))
        },
    )
}

/// The raw session token inside `token` (raw, signed, or percent-encoded
/// signed), after checking the signature when `secret` is known.
///
/// `signed_only` (cookies) refuses the raw form.
pub(crate) fn session_token(
    token: &str,
    secret: Option<&[u8]>,
    signed_only: bool,
) -> Result<String, VerifyError> {
    let decoded: Cow<'_, str> = if token.contains('%') {
        Cow::Owned(percent_decode(token)?)
    } else {
        Cow::Borrowed(token)
    };
    let (raw, signature) = match decoded.split_once('.') {
        None => (decoded.as_ref(), None),
        Some((raw, sig)) => (raw, Some(sig)),
    };
    if raw.is_empty()
        || raw.len() > MAX_SESSION_TOKEN_BYTES
        || !raw.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(VerifyError::rejected("session token is malformed"));
    }
    if signature.is_none() && signed_only {
        return Err(VerifyError::rejected(
            "session cookie is not signed: expected Better Auth's <token>.<signature> form",
        ));
    }
    if let Some(signature) = signature {
        let mac = decode_signature(signature)
            .ok_or_else(|| VerifyError::rejected("session token signature is malformed"))?;
        if let Some(secret) = secret {
            let mut expected = <Hmac<Sha256>>::new_from_slice(secret)
                .map_err(|_| VerifyError::rejected("session token signature is invalid"))?;
            expected.update(raw.as_bytes());
            expected
                .verify_slice(&mac)
                .map_err(|_| VerifyError::rejected("session token signature is invalid"))?;
        }
    }
    Ok(raw.to_owned())
}

/// A 32-byte HMAC in standard or url-safe base64, padded or not.
fn decode_signature(signature: &str) -> Option<Vec<u8>> {
    let unpadded = signature.trim_end_matches('=');
    if signature.len() - unpadded.len() > 2 {
        return None;
    }
    let bytes = if unpadded.contains(['-', '_']) {
        URL_SAFE_NO_PAD.decode(unpadded).ok()?
    } else {
        STANDARD_NO_PAD.decode(unpadded).ok()?
    };
    (bytes.len() == 32).then_some(bytes)
}

fn percent_decode(s: &str) -> Result<String, VerifyError> {
    let malformed = || VerifyError::rejected("session token is malformed");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(malformed)?;
            let hex = std::str::from_utf8(hex).map_err(|_| malformed())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| malformed())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    const SECRET: &[u8] = b"better-auth-secret-for-tests-0123456789";
    const RAW: &str = "AbCdEfGhIjKlMnOpQrStUvWxYz012345";

    fn mac(raw: &str, secret: &[u8]) -> Vec<u8> {
        let mut m = <Hmac<Sha256>>::new_from_slice(secret).unwrap();
        m.update(raw.as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    fn signed(raw: &str, secret: &[u8]) -> String {
        format!("{raw}.{}", STANDARD.encode(mac(raw, secret)))
    }

    #[test]
    fn raw_token_is_accepted_as_is() {
        assert_eq!(session_token(RAW, Some(SECRET), false).unwrap(), RAW);
        assert_eq!(session_token(RAW, None, false).unwrap(), RAW);
    }

    #[test]
    fn signed_token_standard_base64_with_padding() {
        let t = signed(RAW, SECRET);
        assert!(t.ends_with('='));
        assert_eq!(session_token(&t, Some(SECRET), false).unwrap(), RAW);
    }

    #[test]
    fn signed_token_url_safe_and_unpadded_forms() {
        let m = mac(RAW, SECRET);
        for sig in [
            URL_SAFE.encode(&m),
            URL_SAFE_NO_PAD.encode(&m),
            STANDARD_NO_PAD.encode(&m),
        ] {
            let t = format!("{RAW}.{sig}");
            assert_eq!(
                session_token(&t, Some(SECRET), false).unwrap(),
                RAW,
                "{sig}"
            );
        }
    }

    #[test]
    fn percent_encoded_signed_token() {
        let t = signed(RAW, SECRET)
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert_eq!(session_token(&t, Some(SECRET), false).unwrap(), RAW);
    }

    #[test]
    fn rejects_signature_made_with_another_secret() {
        let t = signed(RAW, b"another-secret-entirely-000000000");
        match session_token(&t, Some(SECRET), false) {
            Err(VerifyError::Rejected(m)) => assert_eq!(m, "session token signature is invalid"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_signature_of_another_token() {
        let sig = signed("SomeOtherTokenSomeOtherToken0000", SECRET);
        let (_, sig) = sig.split_once('.').unwrap();
        let t = format!("{RAW}.{sig}");
        assert!(session_token(&t, Some(SECRET), false).is_err());
    }

    #[test]
    fn without_secret_the_signature_is_only_parsed() {
        let t = signed(RAW, b"unknown-secret-unknown-secret-00");
        assert_eq!(session_token(&t, None, false).unwrap(), RAW);
        assert!(session_token(&format!("{RAW}.not-a-mac"), None, false).is_err());
    }

    #[test]
    fn cookies_must_be_signed() {
        assert!(session_token(RAW, Some(SECRET), true).is_err());
        let t = signed(RAW, SECRET).replace('=', "%3D");
        assert_eq!(session_token(&t, Some(SECRET), true).unwrap(), RAW);
    }

    fn col(schema: &str, table: &str, column: &str, data_type: &str) -> CatalogColumn {
        CatalogColumn {
            schema: schema.into(),
            table: table.into(),
            column: column.into(),
            data_type: data_type.into(),
        }
    }

    #[test]
    fn discovery_prefers_candidate_order_and_quotes_names() {
        let ts = "timestamp without time zone";
        let columns = [
            col("public", "sessions", "token", "text"),
            col("public", "sessions", "user_id", "uuid"),
            col("public", "sessions", "expires_at", ts),
            col("public", "session", "token", "text"),
            col("public", "session", "userId", "text"),
            col("public", "session", "expiresAt", ts),
        ];
        let (sql, _) = choose_table(&columns, &SessionSchema::default()).unwrap();
        assert_eq!(
            sql,
            r#"SELECT "userId"::text, "expiresAt" FROM "public"."session" WHERE "token" = $1"#
        );
        let (sql, description) = choose_table(&columns[..3], &SessionSchema::default()).unwrap();
        assert!(sql.contains(r#""public"."sessions""#), "{sql}");
        assert_eq!(
            description,
            r#""public"."sessions" ("token", "user_id", "expires_at")"#
        );
        let odd = [
            col("my\"schema", "session", "token", "text"),
            col("my\"schema", "session", "userId", "text"),
            col("my\"schema", "session", "expiresAt", ts),
        ];
        let (sql, _) = choose_table(&odd, &SessionSchema::default()).unwrap();
        assert!(sql.contains(r#""my""schema"."session""#), "{sql}");
    }

    #[test]
    fn discovery_failures_name_what_was_looked_for() {
        let columns = [
            col("public", "session", "token", "text"),
            col("public", "session", "owner", "text"),
            col("public", "session", "expiresAt", "timestamp with time zone"),
        ];
        let err = choose_table(&columns, &SessionSchema::default()).unwrap_err();
        for needle in [
            r#""session" or "sessions""#,
            r#""userId" or "user_id""#,
            "BETTER_AUTH_SESSION_USER_ID_COLUMN",
            r#""public"."session" has columns "token", "owner", "expiresAt""#,
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let bigint = [
            col("public", "session", "token", "text"),
            col("public", "session", "userId", "text"),
            col("public", "session", "expiresAt", "bigint"),
        ];
        let err = choose_table(&bigint, &SessionSchema::default()).unwrap_err();
        assert!(
            err.contains("bigint") && err.contains("expected timestamptz"),
            "{err}"
        );
    }

    #[test]
    fn rejects_malformed_tokens() {
        let long = "a".repeat(300);
        for bad in [".sig", "a b", "tok\u{1}en", "%zz", "%", long.as_str(), "é"] {
            assert!(session_token(bad, Some(SECRET), false).is_err(), "{bad:?}");
        }
        let truncated = &signed(RAW, SECRET)[..50];
        assert!(session_token(truncated, Some(SECRET), false).is_err());
    }
}
