//! The auth section: reads the `JWT_*`, `BETTER_AUTH_*`, `JWKS_*`,
//! `SESSION_*` and `TOKEN_CACHE_SIZE` variables straight into the
//! [`AuthConfig`] that `tasks_auth::build_verifier` takes, refuses what
//! production must not run with, and provides the development secret.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use secrecy::SecretString;
use tasks_auth::{AuthConfig, ClaimRules};
use tasks_store::StoreConfig;

use super::Raw;
use super::parse::{boolean, non_empty, parse_or, validate_http_url};

/// Name of the file, inside the data directory, holding the generated
/// development secret.
pub const DEV_SECRET_FILE: &str = "dev-jwt-secret";

/// How callers are authenticated.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// What the verifier is built from, secrets included (as `SecretString`).
    pub config: AuthConfig,
    /// Why HS256 tokens are (or are not) accepted, for the start-up log:
    /// the variable the secret came from, or why `BETTER_AUTH_SECRET` was
    /// not taken as one.
    pub hs256_reason: &'static str,
    /// The HS256 secret was generated for local development, not configured.
    pub development_secret: bool,
    /// `AUTH_COOKIE_PREFIX` when cookie sessions are on (`AUTH_COOKIE=true`):
    /// the cookie read is `{prefix}.session_token` (or its `__Secure-` form).
    pub cookie_prefix: Option<String>,
}

impl AuthSettings {
    /// The session database gets the store's connect and query timeouts.
    pub(super) fn parse(raw: &Raw, production: bool, store: &StoreConfig) -> anyhow::Result<Self> {
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
                Some(SecretString::from(url))
            }
            Some(_) => bail!(
                "BETTER_AUTH_DATABASE_URL must be a postgres:// or postgresql:// URL (Better Auth's database)"
            ),
        };
        let revocable = if session_database_url.is_some() {
            Some("BETTER_AUTH_DATABASE_URL")
        } else if better_auth_url.is_some() || jwks_url.is_some() {
            Some("BETTER_AUTH_URL/JWKS_URL")
        } else {
            None
        };
        let (hs256_secret, hs256_reason) = hs256_secret(raw, production, revocable)?;
        let cookie_prefix = cookie_prefix(raw, session_database_url.is_some())?;
        let config = AuthConfig {
            session_schema: session_schema(raw)?,
            rules: claim_rules(raw)?,
            hs256_secret,
            better_auth_url,
            jwks_url,
            better_auth_secret: non_empty(raw.better_auth_secret.as_deref())
                .map(SecretString::from),
            session_database_url,
            session_connect_timeout: store.connect_timeout,
            session_query_timeout: store.query_timeout,
            ..AuthConfig::default()
        };
        Ok(Self {
            config: caches_and_pools(raw, config)?,
            hs256_reason,
            development_secret: false,
            cookie_prefix,
        })
    }

    /// Whether any real authentication is configured.
    #[must_use]
    pub fn is_configured(&self) -> bool {
        let c = &self.config;
        c.hs256_secret.is_some()
            || c.better_auth_url.is_some()
            || c.jwks_url.is_some()
            || c.session_database_url.is_some()
    }

    /// Fills in the development secret when no authentication is configured,
    /// or refuses to in production.
    pub(super) fn ensure(&mut self, production: bool, data_dir: &Path) -> anyhow::Result<()> {
        if self.is_configured() {
            return Ok(());
        }
        if production {
            bail!(
                "no authentication configured: set JWT_SECRET (or BETTER_AUTH_SECRET) for shared-secret tokens, BETTER_AUTH_URL for Better Auth JWKS, or BETTER_AUTH_DATABASE_URL for Better Auth session tokens. Production mode refuses to generate a development secret."
            );
        }
        self.config.hs256_secret = Some(development_secret(data_dir)?);
        self.development_secret = true;
        Ok(())
    }
}

/// The HS256 key (`JWT_SECRET`, else `BETTER_AUTH_SECRET` where that is
/// safe) and why, for the start-up log. `revocable` names the revocable
/// mode configured, if any.
fn hs256_secret(
    raw: &Raw,
    production: bool,
    revocable: Option<&str>,
) -> anyhow::Result<(Option<SecretString>, &'static str)> {
    // BETTER_AUTH_SECRET doubles as the HS256 key only in the plain
    // shared-secret set-up: once sessions or JWKS are chosen, a
    // long-lived HS256 token must not bypass their revocation unless the
    // operator says so.
    let accept_better_auth_secret = non_empty(raw.jwt_accept_better_auth_secret.as_deref())
        .map(|v| boolean("JWT_ACCEPT_BETTER_AUTH_SECRET", Some(v), false))
        .transpose()?;
    let better_auth_secret = non_empty(raw.better_auth_secret.as_deref());
    let (hs256, reason) = match (non_empty(raw.jwt_secret.as_deref()), better_auth_secret) {
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
    Ok((hs256.map(|(_, secret)| SecretString::from(secret)), reason))
}

/// `AUTH_COOKIE` (default off: reading a cookie widens what a foreign site
/// can trigger, so an operator opts in) and `AUTH_COOKIE_PREFIX` (Better
/// Auth's `advanced.cookiePrefix`, default `better-auth`).
fn cookie_prefix(raw: &Raw, sessions: bool) -> anyhow::Result<Option<String>> {
    if !boolean("AUTH_COOKIE", raw.auth_cookie.as_deref(), false)? {
        return Ok(None);
    }
    if !sessions {
        bail!(
            "AUTH_COOKIE=true needs BETTER_AUTH_DATABASE_URL: the session cookie is looked up in Better Auth's database"
        );
    }
    if non_empty(raw.better_auth_secret.as_deref()).is_none() {
        bail!(
            "AUTH_COOKIE=true needs BETTER_AUTH_SECRET: Better Auth signs its session cookie with it, and an unsigned cookie is never accepted"
        );
    }
    let prefix = non_empty(raw.auth_cookie_prefix.as_deref()).unwrap_or("better-auth");
    // RFC 6265 cookie-name characters (a token), as Better Auth accepts.
    let valid = prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if !valid {
        bail!(
            "AUTH_COOKIE_PREFIX must be a cookie name prefix such as better-auth (letters, digits, - _ . at most 64), got {prefix:?}"
        );
    }
    Ok(Some(prefix.to_owned()))
}

/// `BETTER_AUTH_SESSION_TABLE` and the `..._COLUMN` overrides: names as
/// PostgreSQL stores them (case-sensitive, unquoted here); they are checked
/// against the catalog at start-up and quoted in the lookup.
fn session_schema(raw: &Raw) -> anyhow::Result<tasks_auth::SessionSchema> {
    let name = |variable: &str, value: Option<&str>| -> anyhow::Result<Option<String>> {
        let Some(value) = non_empty(value) else {
            return Ok(None);
        };
        if value.len() > 63 || value.chars().any(char::is_control) {
            bail!(
                "{variable} must be a table or column name of at most 63 bytes without control characters (got {value:?})"
            );
        }
        Ok(Some(value.to_owned()))
    };
    Ok(tasks_auth::SessionSchema {
        table: name(
            "BETTER_AUTH_SESSION_TABLE",
            raw.better_auth_session_table.as_deref(),
        )?,
        token_column: name(
            "BETTER_AUTH_SESSION_TOKEN_COLUMN",
            raw.better_auth_session_token_column.as_deref(),
        )?,
        user_id_column: name(
            "BETTER_AUTH_SESSION_USER_ID_COLUMN",
            raw.better_auth_session_user_id_column.as_deref(),
        )?,
        expires_at_column: name(
            "BETTER_AUTH_SESSION_EXPIRES_AT_COLUMN",
            raw.better_auth_session_expires_at_column.as_deref(),
        )?,
    })
}

/// `JWT_LEEWAY`, `JWT_ISSUER`, `JWT_AUDIENCE`, `JWT_MAX_AGE`.
fn claim_rules(raw: &Raw) -> anyhow::Result<ClaimRules> {
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
    Ok(ClaimRules {
        leeway_secs: leeway,
        issuer: non_empty(raw.jwt_issuer.as_deref()).map(str::to_owned),
        audience: non_empty(raw.jwt_audience.as_deref()).map(str::to_owned),
        max_age_secs: max_age,
    })
}

/// The session cache and pool, the JWKS refetch cooldown and the
/// verified-token cache.
fn caches_and_pools(raw: &Raw, config: AuthConfig) -> anyhow::Result<AuthConfig> {
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
        bail!("BETTER_AUTH_DATABASE_POOL_SIZE must be between 1 and 100 (got {session_pool_size})");
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
    Ok(AuthConfig {
        session_cache_ttl: Duration::from_secs(session_cache_ttl),
        session_negative_cache_ttl: Duration::from_secs(session_negative_cache_ttl),
        session_pool_size,
        jwks_refresh_cooldown: Duration::from_secs(jwks_refresh_cooldown),
        token_cache_size,
        ..config
    })
}

/// Reads the development secret from the data directory, generating it on
/// first use (readable by the owner only).
fn development_secret(data_dir: &Path) -> anyhow::Result<SecretString> {
    let path = data_dir.join(DEV_SECRET_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if existing.len() >= 32 {
            return Ok(SecretString::from(existing));
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
    let secret = hex::encode(bytes);
    write_private(&path, &secret)
        .with_context(|| format!("writing the development secret to {}", path.display()))?;
    Ok(SecretString::from(secret))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::ExposeSecret as _;

    use crate::settings::Settings;
    use crate::settings::tests::err;

    #[test]
    fn better_auth_session_settings() {
        let s = Settings::from_pairs([]).unwrap();
        assert!(s.auth.config.session_database_url.is_none());
        assert_eq!(s.auth.config.session_cache_ttl, Duration::from_secs(30));
        assert_eq!(s.auth.config.jwks_refresh_cooldown, Duration::from_secs(30));
        assert_eq!(s.auth.config.token_cache_size, 10_000);
        let s = Settings::from_pairs([
            ("BETTER_AUTH_DATABASE_URL", "postgres://ba:pw@db/auth"),
            ("SESSION_CACHE_TTL_SECS", "5"),
            ("JWKS_REFRESH_COOLDOWN_SECS", "60"),
            ("TOKEN_CACHE_SIZE", "0"),
        ])
        .unwrap();
        assert!(s.has_auth());
        assert_eq!(s.auth.config.session_cache_ttl, Duration::from_secs(5));
        assert_eq!(s.auth.config.jwks_refresh_cooldown, Duration::from_secs(60));
        assert_eq!(s.auth.config.token_cache_size, 0);
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
    fn cookie_and_session_schema_settings() {
        let s = Settings::from_pairs([]).unwrap();
        assert!(s.auth.cookie_prefix.is_none());
        let sessions = [
            ("BETTER_AUTH_DATABASE_URL", "postgres://ba@db/auth"),
            ("BETTER_AUTH_SECRET", "better-auth-secret-0123456789abcdef"),
        ];
        let s = Settings::from_pairs(sessions).unwrap();
        assert!(s.auth.cookie_prefix.is_none(), "cookies are opt-in");
        let s = Settings::from_pairs([sessions[0], sessions[1], ("AUTH_COOKIE", "true")]).unwrap();
        assert_eq!(s.auth.cookie_prefix.as_deref(), Some("better-auth"));
        let s = Settings::from_pairs([
            sessions[0],
            sessions[1],
            ("AUTH_COOKIE", "true"),
            ("AUTH_COOKIE_PREFIX", "my-app"),
            ("BETTER_AUTH_SESSION_TABLE", "sessions"),
            ("BETTER_AUTH_SESSION_USER_ID_COLUMN", "user_id"),
        ])
        .unwrap();
        assert_eq!(s.auth.cookie_prefix.as_deref(), Some("my-app"));
        assert_eq!(
            s.auth.config.session_schema.table.as_deref(),
            Some("sessions")
        );
        assert_eq!(
            s.auth.config.session_schema.user_id_column.as_deref(),
            Some("user_id")
        );
        assert!(err(&[("AUTH_COOKIE", "true")]).contains("BETTER_AUTH_DATABASE_URL"));
        assert!(err(&[sessions[0], ("AUTH_COOKIE", "true")]).contains("BETTER_AUTH_SECRET"));
        assert!(err(&[sessions[0], sessions[1], ("AUTH_COOKIE", "maybe")]).contains("AUTH_COOKIE"));
        assert!(
            err(&[
                sessions[0],
                sessions[1],
                ("AUTH_COOKIE", "true"),
                ("AUTH_COOKIE_PREFIX", "a;b")
            ])
            .contains("AUTH_COOKIE_PREFIX")
        );
        assert!(
            err(&[
                sessions[0],
                sessions[1],
                ("AUTH_COOKIE", "true"),
                ("CORS_ORIGINS", "*")
            ])
            .contains("CORS_ORIGINS")
        );
        assert!(
            err(&[("BETTER_AUTH_SESSION_TABLE", &"x".repeat(64))])
                .contains("BETTER_AUTH_SESSION_TABLE")
        );
    }

    #[test]
    fn better_auth_secret_is_the_fallback_hs256_secret() {
        let s = Settings::from_pairs([("BETTER_AUTH_SECRET", "b-secret")]).unwrap();
        assert_eq!(
            s.auth.config.hs256_secret.unwrap().expose_secret(),
            "b-secret"
        );
        let s = Settings::from_pairs([("BETTER_AUTH_SECRET", "b"), ("JWT_SECRET", "j")]).unwrap();
        assert_eq!(s.auth.config.hs256_secret.unwrap().expose_secret(), "j");
    }

    #[test]
    fn better_auth_secret_is_no_hs256_key_once_sessions_or_jwks_are_chosen() {
        for mode in [
            ("BETTER_AUTH_DATABASE_URL", "postgres://ba@db/auth"),
            ("BETTER_AUTH_URL", "https://auth.example"),
            ("JWKS_URL", "https://auth.example/api/auth/jwks"),
        ] {
            let s = Settings::from_pairs([("BETTER_AUTH_SECRET", "b-secret"), mode]).unwrap();
            assert!(s.auth.config.hs256_secret.is_none(), "{mode:?}");
            assert!(s.auth.hs256_reason.contains("not accepted"), "{mode:?}");
            assert!(
                s.auth.config.better_auth_secret.is_some(),
                "still checks signed sessions"
            );
            let s = Settings::from_pairs([
                ("BETTER_AUTH_SECRET", "b-secret"),
                ("JWT_ACCEPT_BETTER_AUTH_SECRET", "true"),
                mode,
            ])
            .unwrap();
            assert_eq!(
                s.auth.config.hs256_secret.unwrap().expose_secret(),
                "b-secret"
            );
            let s = Settings::from_pairs([
                ("BETTER_AUTH_SECRET", "b-secret"),
                ("JWT_SECRET", "j-secret"),
                mode,
            ])
            .unwrap();
            assert_eq!(
                s.auth.config.hs256_secret.unwrap().expose_secret(),
                "j-secret"
            );
        }
        let s = Settings::from_pairs([
            ("BETTER_AUTH_SECRET", "b-secret"),
            ("JWT_ACCEPT_BETTER_AUTH_SECRET", "false"),
        ])
        .unwrap();
        assert!(s.auth.config.hs256_secret.is_none());
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
        assert_eq!(s.auth.config.rules.max_age_secs, None);
        assert_eq!(s.auth.config.session_pool_size, 4);
        assert_eq!(
            s.auth.config.session_negative_cache_ttl,
            Duration::from_secs(10)
        );
        assert!(!s.log_driver_debug);
        let s = Settings::from_pairs([
            ("JWT_MAX_AGE", "3600"),
            ("BETTER_AUTH_DATABASE_POOL_SIZE", "12"),
            ("SESSION_NEGATIVE_CACHE_TTL_SECS", "0"),
            ("LOG_DRIVER_DEBUG", "true"),
        ])
        .unwrap();
        assert_eq!(s.auth.config.rules.max_age_secs, Some(3600));
        assert_eq!(s.auth.config.session_pool_size, 12);
        assert_eq!(s.auth.config.session_negative_cache_ttl, Duration::ZERO);
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
        let first = dev.auth.config.hs256_secret.clone().unwrap();
        assert!(!format!("{dev:?}").contains(first.expose_secret()));
        let mut again = Settings::from_pairs([("DATA_DIR", dir_s.as_str())]).unwrap();
        again.ensure_auth().unwrap();
        assert_eq!(
            again.auth.config.hs256_secret.unwrap().expose_secret(),
            first.expose_secret()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn session_database_gets_the_store_timeouts() {
        let s = Settings::from_pairs([
            ("BETTER_AUTH_DATABASE_URL", "postgres://ba@db/auth"),
            ("DATABASE_CONNECT_TIMEOUT", "2"),
            ("DATABASE_QUERY_TIMEOUT", "3.5"),
        ])
        .unwrap();
        assert_eq!(
            s.auth.config.session_connect_timeout,
            Duration::from_secs(2)
        );
        assert_eq!(
            s.auth.config.session_query_timeout,
            Duration::from_millis(3500)
        );
    }
}
