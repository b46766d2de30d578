//! Building and running the application: the one place where adapters are
//! chosen and plugged into ports.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{App, HttpServer, middleware::from_fn, web};
use anyhow::Context as _;
use tasks_auth::AuthConfig;
use tasks_ports::TokenVerifier;
use tasks_store::{DieselTaskStore, run_migrations};
use utoipa_actix_web::AppExt as _;

use crate::cookie::CookieAuth;
use crate::error::ApiError;
use crate::extract::{BodyLimit, BodyTimeout};
use crate::live::stream::Live;
use crate::live::{Hub, Notifying, listener, watch};
use crate::middleware::{REQUEST_ID, request_context};
use crate::openapi;
use crate::ratelimit::{RateLimiter, RedisLimiter, UserRateLimit};
use crate::routes;
use crate::settings::Settings;
use crate::state::AppState;

/// A built, bound, not yet running service.
pub struct Application {
    port: u16,
    server: Server,
    /// The `/metrics` listener's port and server, when `METRICS_PORT` is set.
    metrics: Option<(u16, Server)>,
    /// The event streams' hub: ended at shutdown.
    hub: Arc<Hub>,
    /// The change log's periodic clean-up, stopped with the server.
    cleanup: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Connects the store (running migrations if configured), builds the
    /// verifier, and binds the listener (`PORT=0` picks a free port).
    ///
    /// # Errors
    /// Invalid configuration, migrations that cannot be applied, or a port
    /// that cannot be bound.
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        settings.ensure_auth()?;
        if settings.auth.development_secret {
            tracing::warn!(
                "DEVELOPMENT MODE: no JWT_SECRET, BETTER_AUTH_SECRET, BETTER_AUTH_URL or BETTER_AUTH_DATABASE_URL is set, so tokens are checked against a secret generated into {}. Mint one with `tasks-server token <user-id>`. Never run like this in production (use --production or APP_ENV=production to forbid it).",
                settings
                    .data_dir
                    .join(crate::settings::DEV_SECRET_FILE)
                    .display()
            );
        }
        // Before anything takes metric handles (the store, the verifier):
        // handles taken without a recorder are no-ops for good.
        let metrics_handle = match settings.fleet.metrics {
            Some(_) => Some(crate::metrics::install()?),
            None => None,
        };
        let store = Arc::new(DieselTaskStore::connect(&settings.store)?);
        if settings.run_migrations {
            migrate_with_retry(&settings).await?;
        }
        let verifier = build_verifier(&settings).await?;
        let cleanup = spawn_change_log_cleanup(Arc::clone(&store), settings.change_log);
        let cookie_auth = settings
            .auth
            .cookie_prefix
            .as_deref()
            .map(|prefix| CookieAuth::new(prefix, &settings.cors_origins));
        let hub = Hub::new(
            settings.live.max_streams,
            settings.live.max_streams_per_user,
        );
        let repo = live_fan_out(&settings, Arc::clone(&store), &hub)?;
        crate::idempotency::spawn_cleanup(&repo, settings.idempotency_cleanup_interval);
        let state = web::Data::new(AppState {
            repo,
            live: Live {
                hub: Arc::clone(&hub),
                heartbeat: settings.live.heartbeat,
                reverify: settings.live.reverify,
                retry: settings.live.retry,
                watch_ttl: settings
                    .live
                    .direct_url
                    .is_some()
                    .then_some(settings.live.watch_ttl),
            },
            verifier,
            max_tasks_per_user: settings.max_tasks_per_user,
            idempotency_key_ttl: settings.idempotency_key_ttl,
            idempotency_max_keys_per_user: settings.idempotency_max_keys_per_user,
            cookie_auth,
            rate_limiter: rate_limit(&settings)?,
        });

        let listener =
            TcpListener::bind((settings.host.as_str(), settings.port)).with_context(|| {
                format!(
                    "cannot listen on HOST={} PORT={}",
                    settings.host, settings.port
                )
            })?;
        let port = listener.local_addr()?.port();
        tracing::info!(
            address = %listener.local_addr()?,
            database = %settings.store.location.describe(),
            read_replica = %settings.store.read_replica.as_ref().map_or_else(|| "off".to_owned(), |r| tasks_store::redact_url(&r.url)),
            workers = settings.workers,
            "tasks service listening; API docs at /docs/"
        );

        let metrics = match (&settings.fleet.metrics, metrics_handle) {
            (Some(m), Some(handle)) => {
                let listener = TcpListener::bind((m.host, m.port)).with_context(|| {
                    format!(
                        "cannot listen on METRICS_HOST={} METRICS_PORT={}",
                        m.host, m.port
                    )
                })?;
                let address = listener.local_addr()?;
                if !address.ip().is_loopback() {
                    tracing::warn!(
                        %address,
                        "/metrics is served on a non-loopback address: make sure only your Prometheus can reach it"
                    );
                }
                tracing::info!(%address, "Prometheus metrics at /metrics");
                let server = crate::metrics::server(listener, handle, Arc::clone(&store))?;
                Some((address.port(), server))
            }
            _ => None,
        };

        let origins = settings.cors_origins.clone();
        let production = settings.production;
        let limit = BodyLimit(settings.max_body_bytes);
        let write_timeout = settings.client_write_timeout;
        let body_timeout = BodyTimeout(settings.client_body_timeout);
        let server = HttpServer::new(move || {
            let app = App::new()
                .app_data(state.clone())
                .app_data(limit)
                .app_data(body_timeout)
                .app_data(web::QueryConfig::default().error_handler(|err, _req| {
                    ApiError::Validation(format!("Invalid query string: {err}")).into()
                }))
                .wrap(cors(&origins))
                .wrap(from_fn(request_context))
                .into_utoipa_app()
                .openapi(openapi::base());
            let (app, document) = routes::register(app).split_for_parts();
            app.configure(|cfg| routes::docs(cfg, document, production))
        })
        .on_connect(move |connection, _| limit_unread_time(connection, write_timeout))
        .listen(listener)?
        .workers(settings.workers)
        .shutdown_timeout(settings.shutdown_timeout.as_secs().max(1))
        .client_request_timeout(settings.client_request_timeout)
        // One handler for the stop signals (in `run_until_stopped`), not
        // actix's and ours side by side: it ends the event streams first,
        // then stops the server through its handle, so no signal can reach
        // one and not the other.
        .disable_signals()
        .run();

        Ok(Self {
            port,
            server,
            metrics,
            hub,
            cleanup,
        })
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `/metrics` listener's port, when `METRICS_PORT` is set.
    #[must_use]
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(port, _)| *port)
    }

    /// A handle to stop the server from elsewhere (tests, signal handlers).
    #[must_use]
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM or Ctrl-C (SIGINT); in-flight requests then get
    /// up to `SHUTDOWN_TIMEOUT` to finish. SIGQUIT stops at once.
    ///
    /// # Errors
    /// The server failed while running.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            server,
            metrics,
            hub,
            cleanup,
            ..
        } = self;
        let _cleanup = AbortOnDrop(cleanup);
        // Event streams never finish by themselves: end them as soon as a
        // stop signal arrives, then stop the server, which waits for the
        // open responses, so the streams do not hold up shutdown.
        let on_signal = Arc::clone(&hub);
        let handle = server.handle();
        let signals = tokio::spawn(async move {
            let (name, graceful) = stop_signal().await;
            tracing::info!(
                signal = name,
                graceful,
                open_streams = on_signal.open_streams(),
                "stop signal: ending event streams, then stopping the server"
            );
            on_signal.shutdown();
            handle.stop(graceful).await;
        });
        let result = serve(server, metrics).await;
        signals.abort();
        hub.shutdown();
        result
    }

    /// The event streams' hub ([`Hub::shutdown`] ends every stream, as a
    /// stop signal does, for embedders and tests that stop the server
    /// through its handle).
    #[must_use]
    pub fn hub(&self) -> Arc<Hub> {
        Arc::clone(&self.hub)
    }
}

async fn serve(server: Server, metrics: Option<(u16, Server)>) -> std::io::Result<()> {
    let Some((_, metrics)) = metrics else {
        return server.await;
    };
    // The metrics server stops with the API server (it handles no
    // signals itself), after the API's in-flight requests.
    let metrics_handle = metrics.handle();
    let metrics_task = tokio::spawn(metrics);
    let result = server.await;
    metrics_handle.stop(true).await;
    let _ = metrics_task.await;
    result
}

/// Waits for SIGTERM, SIGINT or SIGQUIT (Ctrl-C elsewhere) and says which
/// came and whether the server stops gracefully: SIGTERM and SIGINT (Ctrl-C)
/// let accepted requests finish, SIGQUIT does not.
async fn stop_signal() -> (&'static str, bool) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut streams = Vec::new();
        for (kind, name, graceful) in [
            (SignalKind::terminate(), "SIGTERM", true),
            (SignalKind::interrupt(), "SIGINT", true),
            (SignalKind::quit(), "SIGQUIT", false),
        ] {
            match signal(kind) {
                Ok(s) => streams.push((s, name, graceful)),
                Err(e) => tracing::warn!(error = %e, signal = name, "cannot watch a stop signal"),
            }
        }
        if streams.is_empty() {
            std::future::pending::<()>().await;
        }
        let waits = streams.iter_mut().map(|(s, name, graceful)| {
            let (name, graceful) = (*name, *graceful);
            Box::pin(async move {
                s.recv().await;
                (name, graceful)
            })
        });
        futures_util::future::select_all(waits).await.0
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        ("Ctrl-C", true)
    }
}

/// Where pokes for the event streams come from: the repository pokes the
/// hub after each write through this instance (all the writes there are on
/// SQLite); on PostgreSQL the triggers also notify for watched users, one
/// listener per instance (spawned here) pokes for writes through every
/// instance, and a task (spawned here) renews this instance's watched users. Pokes
/// coalesce, so a local write poked twice costs one log read.
fn live_fan_out(
    settings: &Settings,
    store: Arc<DieselTaskStore>,
    hub: &Arc<Hub>,
) -> anyhow::Result<Arc<dyn tasks_ports::TaskRepository>> {
    use secrecy::ExposeSecret as _;
    if let Some(url) = &settings.live.direct_url {
        let target = listener::target(url.expose_secret(), settings.store.connect_timeout)?;
        tracing::info!(
            url = %tasks_store::redact_url(url.expose_secret()),
            "live updates: listening for changes on a direct connection (DATABASE_DIRECT_URL)"
        );
        tokio::spawn(listener::run(target, Arc::clone(hub)));
    }
    let repo: Arc<dyn tasks_ports::TaskRepository> = Arc::new(Notifying {
        inner: store,
        hub: Arc::clone(hub),
    });
    if settings.live.direct_url.is_some() {
        tokio::spawn(watch::run(
            Arc::clone(&repo),
            Arc::clone(hub),
            settings.live.watch_ttl,
        ));
    }
    Ok(repo)
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Clean-up rounds per interval at most (each handles up to
/// `tasks_store::PURGE_OWNERS_PER_ROUND` owners); the rest waits for the
/// next interval.
const CLEANUP_ROUNDS: usize = 10;

/// Every `CHANGE_LOG_CLEANUP_INTERVAL`, removes the change log's expired
/// and surplus tombstones in bounded rounds (`DieselTaskStore::purge_changes`).
/// Every instance runs it; it is idempotent, so they need no coordination.
fn spawn_change_log_cleanup(
    store: Arc<DieselTaskStore>,
    settings: crate::settings::ChangeLogSettings,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(settings.cleanup_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for _ in 0..CLEANUP_ROUNDS {
                match store.purge_changes(settings.retention).await {
                    Ok((removed, more)) => {
                        if removed > 0 {
                            tracing::info!(removed, "change log: old deletions forgotten");
                        }
                        if !more {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "change log clean-up failed; retrying at the next interval"
                        );
                        break;
                    }
                }
            }
        }
    })
}

/// The per-user rate limit, when `RATE_LIMIT_PER_MINUTE` is set: shared
/// through Redis when `RATE_LIMIT_REDIS_URL` is set too.
fn rate_limit(settings: &Settings) -> anyhow::Result<Option<Arc<UserRateLimit>>> {
    let Some(per_minute) = settings.rate_limit_per_minute else {
        return Ok(None);
    };
    let burst = settings.rate_limit_burst.unwrap_or(per_minute);
    let local = Arc::new(RateLimiter::new(
        per_minute,
        burst,
        settings.rate_limit_max_keys,
    ));
    local.spawn_housekeeping();
    let shared = match &settings.fleet.rate_limit_redis {
        None => None,
        Some(redis) => {
            use secrecy::ExposeSecret as _;
            tracing::info!(
                redis = %tasks_store::redact_url(redis.url.expose_secret()),
                prefix = %redis.prefix,
                timeout_ms = redis.timeout.as_millis(),
                "per-user rate limit shared through Redis (the local limiter answers while Redis does not)"
            );
            Some(RedisLimiter::new(redis, per_minute, burst)?)
        }
    };
    Ok(Some(Arc::new(UserRateLimit::new(local, shared))))
}

/// Disconnects a client that reads nothing for `timeout`.
///
/// actix-web has no send timeout: a response it cannot write waits for the
/// socket forever. The kernel's `TCP_USER_TIMEOUT` (Linux) aborts a
/// connection whose sent data stays unacknowledged, or whose peer keeps its
/// receive window shut, for that long, which is exactly a client that stopped
/// reading (or vanished). Elsewhere this is a no-op and the keep-alive and
/// shutdown timeouts remain the only bounds.
fn limit_unread_time(connection: &dyn std::any::Any, timeout: Duration) {
    if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
        if let Err(e) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(timeout)) {
            tracing::debug!(error = %e, "could not set TCP_USER_TIMEOUT");
        }
        #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "fuchsia")))]
        let _ = (tcp, timeout);
    }
}

fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
        // Any request header the page asks for: authentication is by the
        // bearer token (or a cookie checked against the origin), never by a
        // header a script can set, and a refused preflight fails the whole
        // request in the browser (one frontend sends `X-User-ID`). Origins
        // stay strict.
        .allow_any_header()
        .expose_headers([
            REQUEST_ID.clone(),
            header::LOCATION,
            header::RETRY_AFTER,
            header::ETAG,
            header::LINK,
            crate::idempotency::IDEMPOTENT_REPLAYED.clone(),
        ])
        .max_age(600)
        // A foreign origin gets an ordinary response without CORS headers, so
        // the browser blocks it; non-browser clients are unaffected.
        .block_on_origin_mismatch(false);
    if origins.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin().send_wildcard();
    } else {
        for origin in origins {
            cors = cors.allowed_origin(origin);
        }
        cors = cors.supports_credentials();
    }
    cors
}

/// Applies migrations, waiting for a database that is still starting (as in
/// `docker compose up`) for up to `DATABASE_STARTUP_TIMEOUT`.
async fn migrate_with_retry(settings: &Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match run_migrations(&settings.store).await {
            Ok(applied) => {
                if !applied.is_empty() {
                    tracing::info!(?applied, "database migrations applied");
                }
                return Ok(());
            }
            Err(e) if started.elapsed() + delay < settings.database_startup_timeout => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "database not ready for migrations; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(e.context(format!(
                    "running migrations on {}",
                    settings.store.location.describe()
                )));
            }
        }
    }
}

async fn build_verifier(settings: &Settings) -> anyhow::Result<Arc<dyn TokenVerifier>> {
    use secrecy::ExposeSecret as _;
    let auth = &settings.auth;
    let config = &auth.config;
    if let Some(secret) = &config.hs256_secret
        && secret.expose_secret().len() < 32
        && !auth.development_secret
    {
        // Production refuses this in settings; development only warns.
        tracing::warn!(
            "JWT_SECRET is shorter than 32 bytes; use a long random secret (e.g. `openssl rand -hex 32`)"
        );
    }
    let verifier = tasks_auth::build_composite(config).context("configuring token verification")?;
    log_verifiers(settings, config)?;
    // Session mode: find Better Auth's session table now, so that a schema
    // that matches nothing stops start-up instead of failing every request.
    // One attempt, bounded by the connect and query timeouts: when Better
    // Auth's database is down the service starts all the same (its other
    // verifiers and the task store do not need it), and the table is looked
    // for on the first session lookup, and again on each later one until
    // found (one attempt at a time; those requests get 503 while the
    // database is unreachable).
    match verifier.discover_sessions().await {
        None | Some(Ok(_)) => {}
        Some(Err(tasks_auth::DiscoveryError::NoMatch(message))) => {
            anyhow::bail!("{message}");
        }
        Some(Err(e @ tasks_auth::DiscoveryError::Unreachable(_))) => tracing::warn!(
            error = %e,
            "BETTER AUTH'S DATABASE IS UNREACHABLE: the session table could not be looked for at start-up; session tokens get 503 until it answers, and a schema mismatch will then be logged as an error on every session request instead of stopping start-up"
        ),
    }
    Ok(Arc::new(verifier))
}

/// One line at start-up saying which verifiers are active and why, with
/// every URL redacted.
fn log_verifiers(settings: &Settings, config: &AuthConfig) -> anyhow::Result<()> {
    use secrecy::ExposeSecret as _;
    let auth = &settings.auth;
    let hs256 = match (&config.hs256_secret, auth.development_secret) {
        (Some(_), true) => "on: the generated development secret".to_owned(),
        (Some(_), false) => format!("on: {}", auth.hs256_reason),
        (None, _) => format!("off: {}", auth.hs256_reason),
    };
    let jwks = match config.jwks()? {
        Some(j) => format!("on: {}", tasks_store::redact_url(&j.url)),
        None => "off: no BETTER_AUTH_URL or JWKS_URL".to_owned(),
    };
    let sessions = match &config.session_database_url {
        Some(url) => format!(
            "on: {} (pool {}, cache {} s, negative cache {} s)",
            tasks_store::redact_url(url.expose_secret()),
            config.session_pool_size,
            config.session_cache_ttl.as_secs(),
            config.session_negative_cache_ttl.as_secs()
        ),
        None => "off: no BETTER_AUTH_DATABASE_URL".to_owned(),
    };
    let rules = &config.rules;
    tracing::info!(
        hs256 = %hs256,
        jwks = %jwks,
        sessions = %sessions,
        issuer_required = rules.issuer.is_some() || config.jwks()?.is_some(),
        audience_required = rules.audience.is_some() || config.jwks()?.is_some(),
        max_token_age_secs = rules.max_age_secs,
        "token verifiers"
    );
    Ok(())
}
