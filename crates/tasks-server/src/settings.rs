//! Typed configuration, loaded once at start-up.
//!
//! Sources, later ones winning: built-in defaults, then an optional TOML file
//! (`CONFIG_FILE`, or `tasks.toml` in the working directory if present), then
//! environment variables with the plain names a FastAPI `.env` already has
//! (`DATABASE_URL`, `JWT_SECRET`, `PORT`, ...). Every value is checked here;
//! a bad one stops start-up with a message naming the variable.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use tasks_auth::ClaimRules;
use tasks_store::{DatabaseLocation, StoreConfig};

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Every setting as text, exactly as the sources give it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    app_env: Option<String>,
    host: Option<String>,
    port: Option<String>,
    workers: Option<String>,
    data_dir: Option<String>,
    database_url: Option<String>,
    database_pool_size: Option<String>,
    database_connect_timeout: Option<String>,
    database_query_timeout: Option<String>,
    database_prepared_statements: Option<String>,
    database_startup_timeout: Option<String>,
    run_migrations: Option<String>,
    jwt_secret: Option<String>,
    better_auth_secret: Option<String>,
    better_auth_url: Option<String>,
    jwks_url: Option<String>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    jwt_leeway: Option<String>,
    jwt_max_age: Option<String>,
    jwt_accept_better_auth_secret: Option<String>,
    better_auth_database_pool_size: Option<String>,
    session_negative_cache_ttl_secs: Option<String>,
    log_driver_debug: Option<String>,
    better_auth_database_url: Option<String>,
    session_cache_ttl_secs: Option<String>,
    jwks_refresh_cooldown_secs: Option<String>,
    token_cache_size: Option<String>,
    cors_origins: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    rust_log: Option<String>,
    max_body_bytes: Option<String>,
    shutdown_timeout: Option<String>,
    client_request_timeout: Option<String>,
    client_body_timeout: Option<String>,
    rate_limit_per_minute: Option<String>,
    rate_limit_burst: Option<String>,
    max_tasks_per_user: Option<String>,
    client_write_timeout: Option<String>,
    rate_limit_max_keys: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable, one line per event.
    Compact,
}

/// How callers are authenticated.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Shared HS256 secret (`JWT_SECRET`, or `BETTER_AUTH_SECRET`).
    pub hs256_secret: Option<Secret>,
    /// Why HS256 tokens are (or are not) accepted, for the start-up log:
    /// the variable the secret came from, or why `BETTER_AUTH_SECRET` was
    /// not taken as one.
    pub hs256_reason: &'static str,
    /// The secret was generated for local development, not configured.
    pub development_secret: bool,
    /// Better Auth's base URL (`BETTER_AUTH_URL`), for JWKS verification.
    pub better_auth_url: Option<String>,
    /// Where the JWKS lives (`JWKS_URL`, default `{BETTER_AUTH_URL}/api/auth/jwks`).
    pub jwks_url: Option<String>,
    pub rules: ClaimRules,
    /// `BETTER_AUTH_SECRET` itself, to check signed session tokens.
    pub better_auth_secret: Option<Secret>,
    /// Better Auth's database (`BETTER_AUTH_DATABASE_URL`): session tokens
    /// are checked against its `session` table when set.
    pub session_database_url: Option<Secret>,
    /// How long a checked session is trusted (`SESSION_CACHE_TTL_SECS`).
    pub session_cache_ttl: Duration,
    /// How long an unknown session token is answered from memory
    /// (`SESSION_NEGATIVE_CACHE_TTL_SECS`, 0 = off).
    pub session_negative_cache_ttl: Duration,
    /// Connections to Better Auth's database (`BETTER_AUTH_DATABASE_POOL_SIZE`).
    pub session_pool_size: usize,
    /// Least time between JWKS refetches for unknown kids (`JWKS_REFRESH_COOLDOWN_SECS`).
    pub jwks_refresh_cooldown: Duration,
    /// Entries of the verified-token cache, 0 = off (`TOKEN_CACHE_SIZE`).
    pub token_cache_size: usize,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub production: bool,
    /// Interface to listen on: an IP address or `localhost`.
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    /// Longest start-up waits for the database to accept migrations.
    pub database_startup_timeout: Duration,
    pub run_migrations: bool,
    pub auth: AuthSettings,
    pub cors_origins: Vec<String>,
    pub log_format: LogFormat,
    pub log_filter: String,
    /// `LOG_DRIVER_DEBUG`: let driver crates (tokio_postgres, diesel,
    /// reqwest, hyper, rustls, ...) log below `info`. Off by default because
    /// their debug lines print statement parameters, i.e. session tokens.
    pub log_driver_debug: bool,
    pub max_body_bytes: usize,
    pub shutdown_timeout: Duration,
    pub client_request_timeout: Duration,
    /// Longest time a client may take to send a whole request body.
    pub client_body_timeout: Duration,
    /// Requests per user per minute; `None` (the default) is unlimited.
    pub rate_limit_per_minute: Option<u32>,
    /// Bucket size: requests a user may make at once (default: one minute's worth).
    pub rate_limit_burst: Option<u32>,
    /// Most tasks one user may hold (`MAX_TASKS_PER_USER`).
    pub max_tasks_per_user: u32,
    /// A client that reads nothing of a response for this long is
    /// disconnected (`CLIENT_WRITE_TIMEOUT`).
    pub client_write_timeout: Duration,
    /// Most users the rate limiter remembers (`RATE_LIMIT_MAX_KEYS`).
    pub rate_limit_max_keys: usize,
}

/// Name of the file, inside the data directory, holding the generated
/// development secret.
pub const DEV_SECRET_FILE: &str = "dev-jwt-secret";

impl Settings {
    /// Loads settings from the default sources. `force_production` is the
    /// `--production` flag.
    ///
    /// # Errors
    /// A source cannot be read or a value is invalid; the message names the
    /// variable.
    pub fn load(force_production: bool) -> anyhow::Result<Self> {
        let mut builder = config::Config::builder();
        match std::env::var_os("CONFIG_FILE") {
            Some(path) => {
                let path = PathBuf::from(path);
                builder = builder.add_source(
                    config::File::from(path.clone())
                        .format(config::FileFormat::Toml)
                        .required(true),
                );
            }
            None => {
                builder = builder.add_source(
                    config::File::with_name("tasks.toml")
                        .format(config::FileFormat::Toml)
                        .required(false),
                );
            }
        }
        let raw: Raw = builder
            .add_source(config::Environment::default().try_parsing(false))
            .build()
            .context("reading configuration")?
            .try_deserialize()
            .context("reading configuration")?;
        Self::from_raw(raw, force_production)
    }

    /// Settings for tests and embedding, from `(NAME, value)` pairs only,
    /// ignoring the process environment and files.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> anyhow::Result<Self> {
        let mut builder = config::Config::builder();
        for (k, v) in pairs {
            builder = builder
                .set_override(k.to_ascii_lowercase(), v)
                .context("building configuration")?;
        }
        let raw: Raw = builder
            .build()
            .context("building configuration")?
            .try_deserialize()
            .context("reading configuration")?;
        Self::from_raw(raw, false)
    }

    fn from_raw(raw: Raw, force_production: bool) -> anyhow::Result<Self> {
        let production = force_production
            || match non_empty(raw.app_env.as_deref()) {
                None | Some("development" | "dev" | "local" | "test") => false,
                Some("production" | "prod") => true,
                Some(other) => {
                    bail!("APP_ENV must be \"development\" or \"production\" (got {other:?})")
                }
            };
        let host = non_empty(raw.host.as_deref())
            .unwrap_or("127.0.0.1")
            .to_owned();
        if host != "localhost" && host.parse::<std::net::IpAddr>().is_err() {
            bail!(
                "HOST must be an IP address such as 127.0.0.1 or 0.0.0.0, or localhost (got {host:?})"
            );
        }
        let port: u16 = parse_or("PORT", raw.port.as_deref(), 8000)?;
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let workers: usize = parse_or("WORKERS", raw.workers.as_deref(), cores)?;
        if workers == 0 || workers > 256 {
            bail!("WORKERS must be between 1 and 256 (got {workers})");
        }
        let data_dir = PathBuf::from(non_empty(raw.data_dir.as_deref()).unwrap_or("./data"));

        let location = match non_empty(raw.database_url.as_deref()) {
            None => DatabaseLocation::Sqlite(data_dir.join("tasks.db")),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                DatabaseLocation::Postgres(url.to_owned())
            }
            Some(url) if url.starts_with("sqlite:") => {
                let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
                if path.is_empty() || path == ":memory:" {
                    bail!("DATABASE_URL must name an SQLite file, e.g. sqlite://data/tasks.db");
                }
                DatabaseLocation::Sqlite(PathBuf::from(path))
            }
            Some(_) => bail!(
                "DATABASE_URL must start with postgres://, postgresql:// or sqlite:// (leave it unset for the embedded SQLite default)"
            ),
        };
        // The pool bounds database concurrency, not CPU use: requests wait on
        // the database with the CPU idle, so even a one-core instance keeps
        // enough connections in flight (measured in bench/: with 4 the
        // service left PostgreSQL idle; 16 fixed it).
        let default_pool = match location {
            DatabaseLocation::Postgres(_) => (cores * 4).clamp(16, 64),
            DatabaseLocation::Sqlite(_) => (cores * 2).clamp(4, 8),
        };
        let pool_size: usize = parse_or(
            "DATABASE_POOL_SIZE",
            raw.database_pool_size.as_deref(),
            default_pool,
        )?;
        if pool_size == 0 || pool_size > 1000 {
            bail!("DATABASE_POOL_SIZE must be between 1 and 1000 (got {pool_size})");
        }
        let store = StoreConfig {
            location,
            pool_size,
            connect_timeout: seconds(
                "DATABASE_CONNECT_TIMEOUT",
                raw.database_connect_timeout.as_deref(),
                5.0,
            )?,
            query_timeout: seconds(
                "DATABASE_QUERY_TIMEOUT",
                raw.database_query_timeout.as_deref(),
                5.0,
            )?,
            prepared_statements: boolean(
                "DATABASE_PREPARED_STATEMENTS",
                raw.database_prepared_statements.as_deref(),
                true,
            )?,
        };

        let better_auth_url = non_empty(raw.better_auth_url.as_deref())
            .map(|u| validate_http_url("BETTER_AUTH_URL", u))
            .transpose()?;
        let jwks_url = non_empty(raw.jwks_url.as_deref())
            .map(|u| validate_http_url("JWKS_URL", u))
            .transpose()?;
        if production {
            // Anyone on the path of a plain-HTTP key fetch can swap the keys.
            for (name, url) in [
                ("BETTER_AUTH_URL", &better_auth_url),
                ("JWKS_URL", &jwks_url),
            ] {
                if let Some(url) = url
                    && tasks_auth::is_plain_http_to_remote_host(url)
                {
                    bail!(
                        "{name} must use https:// in production unless it points at this machine (got {})",
                        tasks_store::redact_url(url)
                    );
                }
            }
        }
        let session_database_url = match non_empty(raw.better_auth_database_url.as_deref()) {
            None => None,
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Some(Secret::new(url))
            }
            Some(_) => bail!(
                "BETTER_AUTH_DATABASE_URL must be a postgres:// or postgresql:// URL (Better Auth's database)"
            ),
        };
        // BETTER_AUTH_SECRET doubles as the HS256 key only in the plain
        // shared-secret set-up: once sessions or JWKS are chosen, a
        // long-lived HS256 token must not bypass their revocation unless the
        // operator says so.
        let accept_better_auth_secret = non_empty(raw.jwt_accept_better_auth_secret.as_deref())
            .map(|v| boolean("JWT_ACCEPT_BETTER_AUTH_SECRET", Some(v), false))
            .transpose()?;
        let revocable = if session_database_url.is_some() {
            Some("BETTER_AUTH_DATABASE_URL")
        } else if better_auth_url.is_some() || jwks_url.is_some() {
            Some("BETTER_AUTH_URL/JWKS_URL")
        } else {
            None
        };
        let better_auth_secret = non_empty(raw.better_auth_secret.as_deref());
        let (hs256, hs256_reason) = match (non_empty(raw.jwt_secret.as_deref()), better_auth_secret)
        {
            (Some(secret), _) => (Some(("JWT_SECRET", secret)), "JWT_SECRET is set"),
            (None, None) => (None, "no JWT_SECRET or BETTER_AUTH_SECRET"),
            (None, Some(secret)) => match (accept_better_auth_secret, revocable) {
                (Some(false), _) => (None, "JWT_ACCEPT_BETTER_AUTH_SECRET=false"),
                (Some(true), _) => (
                    Some(("BETTER_AUTH_SECRET", secret)),
                    "BETTER_AUTH_SECRET, because JWT_ACCEPT_BETTER_AUTH_SECRET=true",
                ),
                (None, None) => (
                    Some(("BETTER_AUTH_SECRET", secret)),
                    "BETTER_AUTH_SECRET (shared-secret set-up: no sessions or JWKS configured)",
                ),
                (None, Some("BETTER_AUTH_DATABASE_URL")) => (
                    None,
                    "BETTER_AUTH_SECRET is not accepted as an HS256 key because BETTER_AUTH_DATABASE_URL is set (set JWT_SECRET, or JWT_ACCEPT_BETTER_AUTH_SECRET=true)",
                ),
                (None, Some(_)) => (
                    None,
                    "BETTER_AUTH_SECRET is not accepted as an HS256 key because BETTER_AUTH_URL/JWKS_URL is set (set JWT_SECRET, or JWT_ACCEPT_BETTER_AUTH_SECRET=true)",
                ),
            },
        };
        if production
            && let Some((name, secret)) = hs256
            && secret.len() < 32
        {
            bail!(
                "{name} is shorter than 32 bytes; production mode refuses a weak HS256 secret (use e.g. `openssl rand -hex 32`)"
            );
        }
        let hs256 = hs256.map(|(_, secret)| Secret::new(secret));
        let leeway: u64 = parse_or("JWT_LEEWAY", raw.jwt_leeway.as_deref(), 60)?;
        if leeway > 60 {
            bail!("JWT_LEEWAY must be at most 60 seconds (got {leeway})");
        }
        let max_age: Option<u64> = non_empty(raw.jwt_max_age.as_deref())
            .map(|v| parse_or("JWT_MAX_AGE", Some(v), 0))
            .transpose()?;
        if let Some(age) = max_age
            && !(1..=31_536_000).contains(&age)
        {
            bail!("JWT_MAX_AGE must be between 1 and 31536000 seconds (got {age})");
        }
        let rules = ClaimRules {
            leeway_secs: leeway,
            issuer: non_empty(raw.jwt_issuer.as_deref()).map(str::to_owned),
            audience: non_empty(raw.jwt_audience.as_deref()).map(str::to_owned),
            max_age_secs: max_age,
        };
        let session_cache_ttl: u64 = parse_or(
            "SESSION_CACHE_TTL_SECS",
            raw.session_cache_ttl_secs.as_deref(),
            30,
        )?;
        if session_cache_ttl > 3600 {
            bail!("SESSION_CACHE_TTL_SECS must be between 0 and 3600 (got {session_cache_ttl})");
        }
        let session_negative_cache_ttl: u64 = parse_or(
            "SESSION_NEGATIVE_CACHE_TTL_SECS",
            raw.session_negative_cache_ttl_secs.as_deref(),
            10,
        )?;
        if session_negative_cache_ttl > 300 {
            bail!(
                "SESSION_NEGATIVE_CACHE_TTL_SECS must be between 0 and 300 (got {session_negative_cache_ttl})"
            );
        }
        let session_pool_size: usize = parse_or(
            "BETTER_AUTH_DATABASE_POOL_SIZE",
            raw.better_auth_database_pool_size.as_deref(),
            4,
        )?;
        if !(1..=100).contains(&session_pool_size) {
            bail!(
                "BETTER_AUTH_DATABASE_POOL_SIZE must be between 1 and 100 (got {session_pool_size})"
            );
        }
        let jwks_refresh_cooldown: u64 = parse_or(
            "JWKS_REFRESH_COOLDOWN_SECS",
            raw.jwks_refresh_cooldown_secs.as_deref(),
            30,
        )?;
        if !(1..=3600).contains(&jwks_refresh_cooldown) {
            bail!(
                "JWKS_REFRESH_COOLDOWN_SECS must be between 1 and 3600 (got {jwks_refresh_cooldown})"
            );
        }
        let token_cache_size: usize =
            parse_or("TOKEN_CACHE_SIZE", raw.token_cache_size.as_deref(), 10_000)?;
        if token_cache_size > 1_000_000 {
            bail!("TOKEN_CACHE_SIZE must be between 0 and 1000000 (got {token_cache_size})");
        }
        let auth = AuthSettings {
            hs256_secret: hs256,
            hs256_reason,
            development_secret: false,
            better_auth_url,
            jwks_url,
            rules,
            better_auth_secret: better_auth_secret.map(Secret::new),
            session_database_url,
            session_cache_ttl: Duration::from_secs(session_cache_ttl),
            session_negative_cache_ttl: Duration::from_secs(session_negative_cache_ttl),
            session_pool_size,
            jwks_refresh_cooldown: Duration::from_secs(jwks_refresh_cooldown),
            token_cache_size,
        };

        let cors_origins = parse_origins(
            raw.cors_origins
                .as_deref()
                .unwrap_or("http://localhost:3000"),
        )?;

        let log_format = match non_empty(raw.log_format.as_deref()) {
            None if production => LogFormat::Json,
            None => LogFormat::Compact,
            Some("json") => LogFormat::Json,
            Some("compact" | "pretty" | "text") => LogFormat::Compact,
            Some(other) => bail!("LOG_FORMAT must be \"json\" or \"compact\" (got {other:?})"),
        };
        let log_filter = non_empty(raw.log_level.as_deref())
            .or_else(|| non_empty(raw.rust_log.as_deref()))
            .unwrap_or("info")
            .to_owned();
        tracing_subscriber::EnvFilter::try_new(&log_filter)
            .map_err(|e| anyhow::anyhow!("LOG_LEVEL/RUST_LOG is not a valid log filter: {e}"))?;
        let log_driver_debug = boolean("LOG_DRIVER_DEBUG", raw.log_driver_debug.as_deref(), false)?;
        if production && log_driver_debug {
            bail!(
                "LOG_DRIVER_DEBUG=true is refused in production: driver debug lines print SQL parameters, which include Better Auth session tokens"
            );
        }

        let max_body_bytes: usize =
            parse_or("MAX_BODY_BYTES", raw.max_body_bytes.as_deref(), 256 * 1024)?;
        if max_body_bytes < 1024 {
            bail!("MAX_BODY_BYTES must be at least 1024 (got {max_body_bytes})");
        }

        let rate_limit_per_minute: u32 = parse_or(
            "RATE_LIMIT_PER_MINUTE",
            raw.rate_limit_per_minute.as_deref(),
            0,
        )?;
        let rate_limit_burst: Option<u32> = non_empty(raw.rate_limit_burst.as_deref())
            .map(|v| parse_or("RATE_LIMIT_BURST", Some(v), 0))
            .transpose()?;
        if rate_limit_burst == Some(0) {
            bail!("RATE_LIMIT_BURST must be at least 1");
        }
        let rate_limit_max_keys: usize = parse_or(
            "RATE_LIMIT_MAX_KEYS",
            raw.rate_limit_max_keys.as_deref(),
            100_000,
        )?;
        if !(1..=10_000_000).contains(&rate_limit_max_keys) {
            bail!("RATE_LIMIT_MAX_KEYS must be between 1 and 10000000 (got {rate_limit_max_keys})");
        }

        let max_tasks_per_user: u32 = parse_or(
            "MAX_TASKS_PER_USER",
            raw.max_tasks_per_user.as_deref(),
            10_000,
        )?;
        if !(1..=1_000_000).contains(&max_tasks_per_user) {
            bail!("MAX_TASKS_PER_USER must be between 1 and 1000000 (got {max_tasks_per_user})");
        }
        let client_write_timeout = seconds(
            "CLIENT_WRITE_TIMEOUT",
            raw.client_write_timeout.as_deref(),
            30.0,
        )?;
        if client_write_timeout < Duration::from_secs(1) {
            bail!("CLIENT_WRITE_TIMEOUT must be at least 1 second");
        }

        Ok(Self {
            production,
            max_tasks_per_user,
            client_write_timeout,
            rate_limit_per_minute: (rate_limit_per_minute > 0).then_some(rate_limit_per_minute),
            rate_limit_burst,
            rate_limit_max_keys,
            host,
            port,
            workers,
            data_dir,
            store,
            database_startup_timeout: seconds(
                "DATABASE_STARTUP_TIMEOUT",
                raw.database_startup_timeout.as_deref(),
                30.0,
            )?,
            run_migrations: boolean("RUN_MIGRATIONS", raw.run_migrations.as_deref(), true)?,
            auth,
            cors_origins,
            log_format,
            log_filter,
            log_driver_debug,
            max_body_bytes,
            shutdown_timeout: seconds("SHUTDOWN_TIMEOUT", raw.shutdown_timeout.as_deref(), 30.0)?,
            client_request_timeout: seconds(
                "CLIENT_REQUEST_TIMEOUT",
                raw.client_request_timeout.as_deref(),
                10.0,
            )?,
            client_body_timeout: seconds(
                "CLIENT_BODY_TIMEOUT",
                raw.client_body_timeout.as_deref(),
                10.0,
            )?,
        })
    }

    /// Whether any real authentication is configured.
    #[must_use]
    pub fn has_auth(&self) -> bool {
        self.auth.hs256_secret.is_some()
            || self.auth.better_auth_url.is_some()
            || self.auth.jwks_url.is_some()
            || self.auth.session_database_url.is_some()
    }

    /// Fills in the development secret when no authentication is configured,
    /// or refuses to when running in production.
    ///
    /// # Errors
    /// Production without authentication, or the secret file cannot be
    /// read or written.
    pub fn ensure_auth(&mut self) -> anyhow::Result<()> {
        if self.has_auth() {
            return Ok(());
        }
        if self.production {
            bail!(
                "no authentication configured: set JWT_SECRET (or BETTER_AUTH_SECRET) for shared-secret tokens, BETTER_AUTH_URL for Better Auth JWKS, or BETTER_AUTH_DATABASE_URL for Better Auth session tokens. Production mode refuses to generate a development secret."
            );
        }
        self.auth.hs256_secret = Some(development_secret(&self.data_dir)?);
        self.auth.development_secret = true;
        Ok(())
    }
}

/// Reads the development secret from the data directory, generating it on
/// first use (readable by the owner only).
fn development_secret(data_dir: &std::path::Path) -> anyhow::Result<Secret> {
    let path = data_dir.join(DEV_SECRET_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if existing.len() >= 32 {
            return Ok(Secret::new(existing));
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
    let secret = hex::encode(bytes);
    write_private(&path, &secret)
        .with_context(|| format!("writing the development secret to {}", path.display()))?;
    Ok(Secret::new(secret))
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn parse_or<T>(name: &str, value: Option<&str>, default: T) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    match non_empty(value) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|e| anyhow::anyhow!("{name} is invalid ({v:?}): {e}")),
    }
}

fn seconds(name: &str, value: Option<&str>, default: f64) -> anyhow::Result<Duration> {
    let secs: f64 = parse_or(name, value, default)?;
    if !(secs > 0.0 && secs <= 3600.0) {
        bail!("{name} must be a number of seconds between 0 and 3600 (got {secs})");
    }
    Ok(Duration::from_secs_f64(secs))
}

fn boolean(name: &str, value: Option<&str>, default: bool) -> anyhow::Result<bool> {
    match non_empty(value).map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => bail!("{name} must be true or false (got {other:?})"),
    }
}

fn validate_http_url(name: &str, value: &str) -> anyhow::Result<String> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => {
            Ok(value.trim_end_matches('/').to_owned())
        }
        _ => bail!("{name} must be an http:// or https:// URL (got {value:?})"),
    }
}

/// `CORS_ORIGINS`: a comma-separated list of origins (`scheme://host[:port]`),
/// or `*` for any origin without credentials.
fn parse_origins(value: &str) -> anyhow::Result<Vec<String>> {
    let mut origins = Vec::new();
    for origin in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        if origin == "*" {
            origins.push(origin.to_owned());
            continue;
        }
        let origin = origin.trim_end_matches('/');
        let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
            matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains('/')
        });
        if !valid {
            bail!(
                "CORS_ORIGINS entries must be origins like https://app.example.com (got {origin:?})"
            );
        }
        origins.push(origin.to_owned());
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(pairs: &[(&str, &str)]) -> String {
        format!(
            "{:#}",
            Settings::from_pairs(pairs.iter().copied()).unwrap_err()
        )
    }

    #[test]
    fn defaults() {
        let s = Settings::from_pairs([]).unwrap();
        assert_eq!(s.port, 8000);
        assert_eq!(s.host, "127.0.0.1");
        assert!(
            matches!(s.store.location, DatabaseLocation::Sqlite(ref p) if p.ends_with("tasks.db"))
        );
        assert_eq!(s.cors_origins, vec!["http://localhost:3000"]);
        assert!(!s.production);
        assert!(s.run_migrations);
        assert_eq!(s.log_format, LogFormat::Compact);
    }

    #[test]
    fn invalid_values_name_their_variable() {
        assert!(err(&[("PORT", "eighty")]).contains("PORT"));
        assert!(err(&[("PORT", "70000")]).contains("PORT"));
        assert!(err(&[("HOST", "not-an-ip")]).contains("HOST"));
        assert!(err(&[("DATABASE_URL", "mysql://x")]).contains("DATABASE_URL"));
        assert!(err(&[("DATABASE_POOL_SIZE", "0")]).contains("DATABASE_POOL_SIZE"));
        assert!(err(&[("DATABASE_QUERY_TIMEOUT", "-1")]).contains("DATABASE_QUERY_TIMEOUT"));
        assert!(err(&[("CORS_ORIGINS", "localhost:3000")]).contains("CORS_ORIGINS"));
        assert!(err(&[("JWT_LEEWAY", "3600")]).contains("JWT_LEEWAY"));
        assert!(err(&[("RUN_MIGRATIONS", "maybe")]).contains("RUN_MIGRATIONS"));
        assert!(err(&[("APP_ENV", "staging")]).contains("APP_ENV"));
        assert!(err(&[("LOG_FORMAT", "xml")]).contains("LOG_FORMAT"));
        assert!(err(&[("BETTER_AUTH_URL", "localhost:3000")]).contains("BETTER_AUTH_URL"));
        assert!(err(&[("CLIENT_BODY_TIMEOUT", "0")]).contains("CLIENT_BODY_TIMEOUT"));
        assert!(err(&[("RATE_LIMIT_MAX_KEYS", "0")]).contains("RATE_LIMIT_MAX_KEYS"));
        assert!(err(&[("RATE_LIMIT_MAX_KEYS", "many")]).contains("RATE_LIMIT_MAX_KEYS"));
        assert!(err(&[("CLIENT_BODY_TIMEOUT", "soon")]).contains("CLIENT_BODY_TIMEOUT"));
    }

    #[test]
    fn better_auth_session_settings() {
        let s = Settings::from_pairs([]).unwrap();
        assert!(s.auth.session_database_url.is_none());
        assert_eq!(s.auth.session_cache_ttl, Duration::from_secs(30));
        assert_eq!(s.auth.jwks_refresh_cooldown, Duration::from_secs(30));
        assert_eq!(s.auth.token_cache_size, 10_000);
        let s = Settings::from_pairs([
            ("BETTER_AUTH_DATABASE_URL", "postgres://ba:pw@db/auth"),
            ("SESSION_CACHE_TTL_SECS", "5"),
            ("JWKS_REFRESH_COOLDOWN_SECS", "60"),
            ("TOKEN_CACHE_SIZE", "0"),
        ])
        .unwrap();
        assert!(s.has_auth());
        assert_eq!(s.auth.session_cache_ttl, Duration::from_secs(5));
        assert_eq!(s.auth.jwks_refresh_cooldown, Duration::from_secs(60));
        assert_eq!(s.auth.token_cache_size, 0);
        assert!(!format!("{s:?}").contains("pw@db"));
        assert!(
            err(&[("BETTER_AUTH_DATABASE_URL", "mysql://x")]).contains("BETTER_AUTH_DATABASE_URL")
        );
        assert!(err(&[("SESSION_CACHE_TTL_SECS", "soon")]).contains("SESSION_CACHE_TTL_SECS"));
        assert!(err(&[("SESSION_CACHE_TTL_SECS", "7200")]).contains("SESSION_CACHE_TTL_SECS"));
        assert!(err(&[("JWKS_REFRESH_COOLDOWN_SECS", "0")]).contains("JWKS_REFRESH_COOLDOWN_SECS"));
        assert!(err(&[("TOKEN_CACHE_SIZE", "-1")]).contains("TOKEN_CACHE_SIZE"));
        assert!(err(&[("TOKEN_CACHE_SIZE", "2000000")]).contains("TOKEN_CACHE_SIZE"));
    }

    #[test]
    fn better_auth_secret_is_the_fallback_hs256_secret() {
        let s = Settings::from_pairs([("BETTER_AUTH_SECRET", "b-secret")]).unwrap();
        assert_eq!(s.auth.hs256_secret.unwrap().expose(), "b-secret");
        let s = Settings::from_pairs([("BETTER_AUTH_SECRET", "b"), ("JWT_SECRET", "j")]).unwrap();
        assert_eq!(s.auth.hs256_secret.unwrap().expose(), "j");
    }

    #[test]
    fn better_auth_secret_is_no_hs256_key_once_sessions_or_jwks_are_chosen() {
        for mode in [
            ("BETTER_AUTH_DATABASE_URL", "postgres://ba@db/auth"),
            ("BETTER_AUTH_URL", "https://auth.example"),
            ("JWKS_URL", "https://auth.example/api/auth/jwks"),
        ] {
            let s = Settings::from_pairs([("BETTER_AUTH_SECRET", "b-secret"), mode]).unwrap();
            assert!(s.auth.hs256_secret.is_none(), "{mode:?}");
            assert!(s.auth.hs256_reason.contains("not accepted"), "{mode:?}");
            assert!(
                s.auth.better_auth_secret.is_some(),
                "still checks signed sessions"
            );
            let s = Settings::from_pairs([
                ("BETTER_AUTH_SECRET", "b-secret"),
                ("JWT_ACCEPT_BETTER_AUTH_SECRET", "true"),
                mode,
            ])
            .unwrap();
            assert_eq!(s.auth.hs256_secret.unwrap().expose(), "b-secret");
            let s = Settings::from_pairs([
                ("BETTER_AUTH_SECRET", "b-secret"),
                ("JWT_SECRET", "j-secret"),
                mode,
            ])
            .unwrap();
            assert_eq!(s.auth.hs256_secret.unwrap().expose(), "j-secret");
        }
        let s = Settings::from_pairs([
            ("BETTER_AUTH_SECRET", "b-secret"),
            ("JWT_ACCEPT_BETTER_AUTH_SECRET", "false"),
        ])
        .unwrap();
        assert!(s.auth.hs256_secret.is_none());
        assert!(
            err(&[("JWT_ACCEPT_BETTER_AUTH_SECRET", "perhaps")])
                .contains("JWT_ACCEPT_BETTER_AUTH_SECRET")
        );
    }

    #[test]
    fn production_refuses_weak_settings_naming_the_variable() {
        let prod = |pairs: &[(&str, &str)]| {
            let mut all = vec![("APP_ENV", "production")];
            all.extend_from_slice(pairs);
            err(&all)
        };
        assert!(prod(&[("JWT_SECRET", "a")]).contains("JWT_SECRET"));
        assert!(prod(&[("BETTER_AUTH_SECRET", "short")]).contains("BETTER_AUTH_SECRET"));
        let e = prod(&[("BETTER_AUTH_URL", "http://auth.example.com")]);
        assert!(e.contains("BETTER_AUTH_URL") && e.contains("https"), "{e}");
        let e = prod(&[
            ("BETTER_AUTH_URL", "https://auth.example.com"),
            ("JWKS_URL", "http://user:pw-in-url@10.1.2.3/jwks"),
        ]);
        assert!(e.contains("JWKS_URL") && !e.contains("pw-in-url"), "{e}");
        assert!(
            prod(&[
                ("JWT_SECRET", &"k".repeat(32)),
                ("LOG_DRIVER_DEBUG", "true")
            ])
            .contains("LOG_DRIVER_DEBUG")
        );
        // What production accepts: long secrets, https, plain http to this machine.
        for ok in [
            vec![("JWT_SECRET", "k".repeat(32))],
            vec![("BETTER_AUTH_URL", "https://auth.example.com".to_owned())],
            vec![("BETTER_AUTH_URL", "http://localhost:3000".to_owned())],
            vec![("JWKS_URL", "http://127.0.0.1:3000/api/auth/jwks".to_owned())],
        ] {
            let mut pairs = vec![("APP_ENV", "production")];
            pairs.extend(ok.iter().map(|(k, v)| (*k, v.as_str())));
            assert!(Settings::from_pairs(pairs).is_ok(), "{ok:?}");
        }
        // Development only warns (at start-up) about the same settings.
        assert!(Settings::from_pairs([("JWT_SECRET", "a"), ("LOG_DRIVER_DEBUG", "true")]).is_ok());
    }

    #[test]
    fn token_and_session_limits() {
        let s = Settings::from_pairs([]).unwrap();
        assert_eq!(s.auth.rules.max_age_secs, None);
        assert_eq!(s.auth.session_pool_size, 4);
        assert_eq!(s.auth.session_negative_cache_ttl, Duration::from_secs(10));
        assert!(!s.log_driver_debug);
        let s = Settings::from_pairs([
            ("JWT_MAX_AGE", "3600"),
            ("BETTER_AUTH_DATABASE_POOL_SIZE", "12"),
            ("SESSION_NEGATIVE_CACHE_TTL_SECS", "0"),
            ("LOG_DRIVER_DEBUG", "true"),
        ])
        .unwrap();
        assert_eq!(s.auth.rules.max_age_secs, Some(3600));
        assert_eq!(s.auth.session_pool_size, 12);
        assert_eq!(s.auth.session_negative_cache_ttl, Duration::ZERO);
        assert!(s.log_driver_debug);
        for (name, value) in [
            ("JWT_MAX_AGE", "0"),
            ("JWT_MAX_AGE", "an hour"),
            ("BETTER_AUTH_DATABASE_POOL_SIZE", "0"),
            ("BETTER_AUTH_DATABASE_POOL_SIZE", "1000"),
            ("SESSION_NEGATIVE_CACHE_TTL_SECS", "3600"),
            ("LOG_DRIVER_DEBUG", "sometimes"),
        ] {
            assert!(err(&[(name, value)]).contains(name), "{name}={value}");
        }
    }

    #[test]
    fn database_urls() {
        let s = Settings::from_pairs([("DATABASE_URL", "postgresql://u:p@h/db?sslmode=require")])
            .unwrap();
        assert!(matches!(s.store.location, DatabaseLocation::Postgres(_)));
        let s = Settings::from_pairs([("DATABASE_URL", "sqlite://var/t.db")]).unwrap();
        assert_eq!(
            s.store.location,
            DatabaseLocation::Sqlite("var/t.db".into())
        );
    }

    #[test]
    fn cors_origins_list() {
        let s =
            Settings::from_pairs([("CORS_ORIGINS", "https://a.example, http://localhost:3000/")])
                .unwrap();
        assert_eq!(
            s.cors_origins,
            vec!["https://a.example", "http://localhost:3000"]
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Settings::from_pairs([
            ("JWT_SECRET", "hunter2-hunter2"),
            ("DATABASE_URL", "postgres://u:pw123@h/db"),
        ])
        .unwrap();
        let dump = format!("{s:?}");
        assert!(!dump.contains("hunter2"));
        assert!(!dump.contains("pw123"));
    }

    #[test]
    fn production_requires_auth_and_development_generates_a_stable_secret() {
        let dir = std::env::temp_dir().join(format!("tasks-settings-{}", std::process::id()));
        let dir_s = dir.to_string_lossy().into_owned();
        let mut prod =
            Settings::from_pairs([("APP_ENV", "production"), ("DATA_DIR", &dir_s)]).unwrap();
        assert!(
            prod.ensure_auth()
                .unwrap_err()
                .to_string()
                .contains("JWT_SECRET")
        );
        let mut dev = Settings::from_pairs([("DATA_DIR", dir_s.as_str())]).unwrap();
        dev.ensure_auth().unwrap();
        assert!(dev.auth.development_secret);
        let first = dev.auth.hs256_secret.clone().unwrap();
        let mut again = Settings::from_pairs([("DATA_DIR", dir_s.as_str())]).unwrap();
        again.ensure_auth().unwrap();
        assert_eq!(again.auth.hs256_secret.unwrap(), first);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
