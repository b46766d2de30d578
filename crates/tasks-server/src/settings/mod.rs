//! Typed configuration, loaded once at start-up.
//!
//! Sources, later ones winning: built-in defaults, then an optional TOML file
//! (`CONFIG_FILE`, or `tasks.toml` in the working directory if present), then
//! environment variables with the plain names a FastAPI `.env` already has
//! (`DATABASE_URL`, `JWT_SECRET`, `PORT`, ...). Every value is checked here;
//! a bad one stops start-up with a message naming the variable.
//!
//! One file per section: `http` (listener, CORS, limits and timeouts),
//! `database` (the store's `StoreConfig`), `auth` (the verifier's
//! `AuthConfig`), `logging`, `changes` (the change log's retention); `parse` holds the small typed parsers they share.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use tasks_store::StoreConfig;

mod auth;
mod changes;
mod database;
mod fleet;
mod http;
mod live;
mod logging;
mod parse;

pub use auth::{AuthSettings, DEV_SECRET_FILE};
pub use changes::ChangeLogSettings;
pub use fleet::{FleetSettings, MetricsListener, RedisLimit, Traces};
pub use live::LiveSettings;
pub use logging::LogFormat;

use parse::non_empty;

/// Every setting as text, exactly as the sources give it. No `Debug`: it
/// holds the secrets in the clear until the sections wrap them.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Raw {
    app_env: Option<String>,
    host: Option<String>,
    port: Option<String>,
    workers: Option<String>,
    data_dir: Option<String>,
    database_url: Option<String>,
    database_pool_size: Option<String>,
    database_write_queue: Option<String>,
    database_connect_timeout: Option<String>,
    database_query_timeout: Option<String>,
    database_prepared_statements: Option<String>,
    database_startup_timeout: Option<String>,
    database_read_url: Option<String>,
    database_read_max_lag: Option<String>,
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
    idempotency_key_ttl_secs: Option<String>,
    idempotency_cleanup_interval_secs: Option<String>,
    idempotency_max_keys_per_user: Option<String>,
    client_write_timeout: Option<String>,
    rate_limit_max_keys: Option<String>,
    better_auth_session_table: Option<String>,
    better_auth_session_token_column: Option<String>,
    better_auth_session_user_id_column: Option<String>,
    better_auth_session_expires_at_column: Option<String>,
    auth_cookie: Option<String>,
    auth_cookie_prefix: Option<String>,
    metrics_port: Option<String>,
    metrics_host: Option<String>,
    rate_limit_redis_url: Option<String>,
    rate_limit_redis_prefix: Option<String>,
    rate_limit_redis_timeout: Option<String>,
    otel_exporter_otlp_endpoint: Option<String>,
    otel_exporter_otlp_traces_endpoint: Option<String>,
    otel_exporter_otlp_protocol: Option<String>,
    otel_exporter_otlp_traces_protocol: Option<String>,
    otel_traces_exporter: Option<String>,
    otel_sdk_disabled: Option<String>,
    database_direct_url: Option<String>,
    sse_max_streams: Option<String>,
    sse_max_streams_per_user: Option<String>,
    sse_heartbeat_interval: Option<String>,
    sse_reverify_interval: Option<String>,
    sse_retry: Option<String>,
    sse_watch_ttl: Option<String>,
    change_log_retention_secs: Option<String>,
    max_tombstones_per_user: Option<String>,
    change_log_cleanup_interval: Option<String>,
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
    /// How long an `Idempotency-Key` is remembered (`IDEMPOTENCY_KEY_TTL_SECS`).
    pub idempotency_key_ttl: Duration,
    /// How often expired keys are deleted (`IDEMPOTENCY_CLEANUP_INTERVAL_SECS`).
    pub idempotency_cleanup_interval: Duration,
    /// Most live idempotency keys per user (`IDEMPOTENCY_MAX_KEYS_PER_USER`).
    pub idempotency_max_keys_per_user: u32,
    /// A client that reads nothing of a response for this long is
    /// disconnected (`CLIENT_WRITE_TIMEOUT`).
    pub client_write_timeout: Duration,
    /// Most users the rate limiter remembers (`RATE_LIMIT_MAX_KEYS`).
    pub rate_limit_max_keys: usize,
    /// Metrics, shared rate limits, traces (`settings/fleet.rs`).
    pub fleet: FleetSettings,
    /// Live updates: stream limits and the listener's URL (`settings/live.rs`).
    pub live: LiveSettings,
    /// The change feed's retention and clean-up (`settings/changes.rs`).
    pub change_log: ChangeLogSettings,
}

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

    /// The sections in a fixed order; the first bad value stops start-up.
    fn from_raw(raw: Raw, force_production: bool) -> anyhow::Result<Self> {
        let production = force_production || app_env_is_production(&raw)?;
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let listener = http::Listener::parse(&raw, cores)?;
        let data_dir = PathBuf::from(non_empty(raw.data_dir.as_deref()).unwrap_or("./data"));
        let database = database::Database::parse(&raw, &data_dir, cores)?;
        let auth = AuthSettings::parse(&raw, production, &database.store)?;
        let cors_origins = http::cors_origins(&raw)?;
        if auth.cookie_prefix.is_some() && cors_origins.iter().any(|o| o == "*") {
            // The CSRF rule for cookie-authenticated writes is "Origin in
            // CORS_ORIGINS": with `*` it would allow every site.
            anyhow::bail!(
                "AUTH_COOKIE=true needs CORS_ORIGINS to list the frontend's origins explicitly, not *"
            );
        }
        let logging = logging::Logging::parse(&raw, production)?;
        let limits = http::Limits::parse(&raw)?;
        let fleet = FleetSettings::parse(&raw, limits.rate_limit_per_minute.is_some())?;
        let live = LiveSettings::parse(&raw, &database.store.location)?;
        let change_log = ChangeLogSettings::parse(&raw)?;
        Ok(Self {
            production,
            host: listener.host,
            port: listener.port,
            workers: listener.workers,
            data_dir,
            store: database.store,
            database_startup_timeout: database.startup_timeout,
            run_migrations: database.run_migrations,
            auth,
            cors_origins,
            log_format: logging.format,
            log_filter: logging.filter,
            log_driver_debug: logging.driver_debug,
            max_body_bytes: limits.max_body_bytes,
            shutdown_timeout: limits.shutdown_timeout,
            client_request_timeout: limits.client_request_timeout,
            client_body_timeout: limits.client_body_timeout,
            rate_limit_per_minute: limits.rate_limit_per_minute,
            rate_limit_burst: limits.rate_limit_burst,
            max_tasks_per_user: limits.max_tasks_per_user,
            idempotency_key_ttl: limits.idempotency_key_ttl,
            idempotency_cleanup_interval: limits.idempotency_cleanup_interval,
            idempotency_max_keys_per_user: limits.idempotency_max_keys_per_user,
            client_write_timeout: limits.client_write_timeout,
            rate_limit_max_keys: limits.rate_limit_max_keys,
            fleet,
            live,
            change_log,
        })
    }

    /// Whether any real authentication is configured.
    #[must_use]
    pub fn has_auth(&self) -> bool {
        self.auth.is_configured()
    }

    /// Fills in the development secret when no authentication is configured,
    /// or refuses to when running in production.
    ///
    /// # Errors
    /// Production without authentication, or the secret file cannot be
    /// read or written.
    pub fn ensure_auth(&mut self) -> anyhow::Result<()> {
        self.auth.ensure(self.production, &self.data_dir)
    }
}

/// `APP_ENV`.
fn app_env_is_production(raw: &Raw) -> anyhow::Result<bool> {
    match non_empty(raw.app_env.as_deref()) {
        None | Some("development" | "dev" | "local" | "test") => Ok(false),
        Some("production" | "prod") => Ok(true),
        Some(other) => {
            bail!("APP_ENV must be \"development\" or \"production\" (got {other:?})")
        }
    }
}

#[cfg(test)]
mod tests {
    use tasks_store::DatabaseLocation;

    use super::*;

    /// The message of the error `pairs` stop start-up with.
    pub(super) fn err(pairs: &[(&str, &str)]) -> String {
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
        assert_eq!(s.idempotency_key_ttl, Duration::from_secs(86_400));
        assert_eq!(s.idempotency_cleanup_interval, Duration::from_secs(60));
        assert_eq!(s.idempotency_max_keys_per_user, 10_000);
    }

    #[test]
    fn invalid_values_name_their_variable() {
        assert!(err(&[("PORT", "eighty")]).contains("PORT"));
        assert!(err(&[("PORT", "70000")]).contains("PORT"));
        assert!(err(&[("HOST", "not-an-ip")]).contains("HOST"));
        assert!(err(&[("DATABASE_URL", "mysql://x")]).contains("DATABASE_URL"));
        assert!(err(&[("DATABASE_POOL_SIZE", "0")]).contains("DATABASE_POOL_SIZE"));
        assert!(err(&[("DATABASE_WRITE_QUEUE", "0")]).contains("DATABASE_WRITE_QUEUE"));
        assert!(err(&[("DATABASE_WRITE_QUEUE", "many")]).contains("DATABASE_WRITE_QUEUE"));
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
        assert!(err(&[("IDEMPOTENCY_KEY_TTL_SECS", "0")]).contains("IDEMPOTENCY_KEY_TTL_SECS"));
        assert!(
            err(&[("IDEMPOTENCY_KEY_TTL_SECS", "999999999")]).contains("IDEMPOTENCY_KEY_TTL_SECS")
        );
        assert!(
            err(&[("IDEMPOTENCY_MAX_KEYS_PER_USER", "0")])
                .contains("IDEMPOTENCY_MAX_KEYS_PER_USER")
        );
        assert!(
            err(&[("IDEMPOTENCY_CLEANUP_INTERVAL_SECS", "0")])
                .contains("IDEMPOTENCY_CLEANUP_INTERVAL_SECS")
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Settings::from_pairs([
            ("JWT_SECRET", "hunter2-hunter2"),
            ("DATABASE_URL", "postgres://u:pw123@h/db"),
            ("BETTER_AUTH_SECRET", "ba-secret-value"),
            ("BETTER_AUTH_DATABASE_URL", "postgres://ba:ba-db-pw@h/auth"),
            ("BETTER_AUTH_URL", "https://u:ba-url-pw@auth.example"),
            ("JWKS_URL", "https://u:jwks-url-pw@auth.example/jwks"),
        ])
        .unwrap();
        let dump = format!("{s:?}");
        for secret in [
            "hunter2",
            "pw123",
            "ba-secret-value",
            "ba-db-pw",
            "ba-url-pw",
            "jwks-url-pw",
        ] {
            assert!(!dump.contains(secret), "{secret} in {dump}");
        }
        // The URLs themselves are still there, without their passwords.
        assert!(dump.contains("auth.example/jwks"), "{dump}");
    }
}
