//! One verifier in front of the configured ones: routes each token to the one
//! verifier that can judge it, and caches successful answers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use secrecy::{ExposeSecret as _, SecretString};
use tasks_domain::OwnerId;
use tasks_ports::{TokenVerifier, VerifyError};

use crate::cache::{ExpiringCache, token_hash};
use crate::claims::{ClaimRules, Verified, looks_like_jwt, parse_header, precheck};
use crate::hs256::Hs256Verifier;
use crate::jwks::{JwksConfig, JwksVerifier, origin_of};
use crate::session::{DiscoveryError, SessionConfig, SessionSchema, SessionVerifier};

/// Everything that decides how bearer tokens are verified.
#[derive(Clone)]
pub struct AuthConfig {
    /// Leeway, and explicit `iss` / `aud` (`JWT_ISSUER`, `JWT_AUDIENCE`). For
    /// HS256 they apply as given; for JWKS tokens they default to the origin
    /// of `better_auth_url` (else of `jwks_url`), as Better Auth sets them.
    pub rules: ClaimRules,
    /// Shared secret for HS256 JWTs (`JWT_SECRET`).
    pub hs256_secret: Option<SecretString>,
    /// Better Auth's base URL (`BETTER_AUTH_URL`); turns JWKS verification on.
    pub better_auth_url: Option<String>,
    /// JWKS location (`JWKS_URL`); default `{better_auth_url}/api/auth/jwks`.
    pub jwks_url: Option<String>,
    /// `BETTER_AUTH_SECRET`, to check signed session tokens.
    pub better_auth_secret: Option<SecretString>,
    /// Better Auth's database (`BETTER_AUTH_DATABASE_URL`); turns session
    /// token checks on.
    pub session_database_url: Option<SecretString>,
    /// `SESSION_CACHE_TTL_SECS`.
    pub session_cache_ttl: Duration,
    /// `SESSION_NEGATIVE_CACHE_TTL_SECS`: how long an unknown or expired
    /// session token is answered from memory; zero turns it off.
    pub session_negative_cache_ttl: Duration,
    /// `BETTER_AUTH_DATABASE_POOL_SIZE`.
    pub session_pool_size: usize,
    pub session_connect_timeout: Duration,
    pub session_query_timeout: Duration,
    /// `JWKS_REFRESH_COOLDOWN_SECS`.
    pub jwks_refresh_cooldown: Duration,
    pub jwks_max_age: Duration,
    pub jwks_fetch_timeout: Duration,
    /// `TOKEN_CACHE_SIZE`: entries of the verified-token cache; 0 turns it off.
    pub token_cache_size: usize,
    /// `BETTER_AUTH_SESSION_*`: explicit session table and column names.
    pub session_schema: SessionSchema,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            rules: ClaimRules::default(),
            hs256_secret: None,
            better_auth_url: None,
            jwks_url: None,
            better_auth_secret: None,
            session_database_url: None,
            session_cache_ttl: Duration::from_secs(30),
            session_negative_cache_ttl: Duration::from_secs(10),
            session_pool_size: 4,
            session_connect_timeout: Duration::from_secs(5),
            session_query_timeout: Duration::from_secs(5),
            jwks_refresh_cooldown: Duration::from_secs(30),
            jwks_max_age: Duration::from_secs(600),
            jwks_fetch_timeout: Duration::from_secs(5),
            token_cache_size: 10_000,
            session_schema: SessionSchema::default(),
        }
    }
}

/// Written by hand only for the two public URLs, shown without a password
/// (`redact_url`); the secrets print as `secrecy`'s `[REDACTED]`.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = |s: &Option<String>| s.as_deref().map(tasks_pg::redact_url);
        f.debug_struct("AuthConfig")
            .field("rules", &self.rules)
            .field("hs256_secret", &self.hs256_secret)
            .field("better_auth_url", &url(&self.better_auth_url))
            .field("jwks_url", &url(&self.jwks_url))
            .field("better_auth_secret", &self.better_auth_secret)
            .field("session_database_url", &self.session_database_url)
            .field("session_cache_ttl", &self.session_cache_ttl)
            .field(
                "session_negative_cache_ttl",
                &self.session_negative_cache_ttl,
            )
            .field("session_pool_size", &self.session_pool_size)
            .field("session_connect_timeout", &self.session_connect_timeout)
            .field("session_query_timeout", &self.session_query_timeout)
            .field("jwks_refresh_cooldown", &self.jwks_refresh_cooldown)
            .field("jwks_max_age", &self.jwks_max_age)
            .field("jwks_fetch_timeout", &self.jwks_fetch_timeout)
            .field("token_cache_size", &self.token_cache_size)
            .field("session_schema", &self.session_schema)
            .finish()
    }
}

impl AuthConfig {
    /// The JWKS settings, when Better Auth JWTs are configured.
    ///
    /// # Errors
    /// A URL that is not http(s).
    pub fn jwks(&self) -> anyhow::Result<Option<JwksConfig>> {
        let url = match (&self.jwks_url, &self.better_auth_url) {
            (Some(url), _) => url.clone(),
            (None, Some(base)) => format!("{}/api/auth/jwks", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        let origin = match &self.better_auth_url {
            Some(base) => origin_of(base).context("BETTER_AUTH_URL must be an http(s) URL")?,
            None => origin_of(&url).context("JWKS_URL must be an http(s) URL")?,
        };
        let rules = ClaimRules {
            leeway_secs: self.rules.leeway_secs,
            issuer: Some(self.rules.issuer.clone().unwrap_or_else(|| origin.clone())),
            audience: Some(self.rules.audience.clone().unwrap_or(origin)),
            max_age_secs: self.rules.max_age_secs,
        };
        Ok(Some(JwksConfig {
            url,
            rules,
            refresh_cooldown: self.jwks_refresh_cooldown,
            max_age: self.jwks_max_age,
            fetch_timeout: self.jwks_fetch_timeout,
        }))
    }

    /// The session settings, when session tokens are configured.
    #[must_use]
    pub fn session(&self) -> Option<SessionConfig> {
        let url = self.session_database_url.as_ref()?;
        Some(SessionConfig {
            database_url: url.expose_secret().to_owned(),
            secret: self
                .better_auth_secret
                .as_ref()
                .map(|s| s.expose_secret().to_owned()),
            pool_size: self.session_pool_size,
            connect_timeout: self.session_connect_timeout,
            query_timeout: self.session_query_timeout,
            cache_ttl: self.session_cache_ttl,
            negative_cache_ttl: self.session_negative_cache_ttl,
            negative_cache_size: self.token_cache_size,
            schema: self.session_schema.clone(),
        })
    }
}

/// Builds the verifier `config` asks for. Nothing is contacted here: a JWKS
/// prefetch is started in the background when a Tokio runtime is running,
/// and its failure is only logged.
///
/// # Errors
/// Nothing is configured, or a URL is invalid.
pub fn build_verifier(config: &AuthConfig) -> anyhow::Result<Arc<dyn TokenVerifier>> {
    Ok(Arc::new(build_composite(config)?))
}

/// As [`build_verifier`], returning the concrete verifier, so that start-up
/// can look for the session table ([`CompositeVerifier::discover_sessions`])
/// before serving.
///
/// # Errors
/// Nothing is configured, or a URL is invalid.
pub fn build_composite(config: &AuthConfig) -> anyhow::Result<CompositeVerifier> {
    let hs256 = config
        .hs256_secret
        .as_ref()
        .map(|s| Hs256Verifier::new(s.expose_secret().as_bytes(), &config.rules));
    let jwks = config.jwks()?.map(JwksVerifier::new).transpose()?;
    let session = config
        .session()
        .map(|s| SessionVerifier::new(&s))
        .transpose()?;
    if hs256.is_none() && jwks.is_none() && session.is_none() {
        anyhow::bail!(
            "no token verifier configured: set JWT_SECRET, BETTER_AUTH_URL / JWKS_URL or BETTER_AUTH_DATABASE_URL"
        );
    }
    if let Some(jwks) = &jwks
        && tokio::runtime::Handle::try_current().is_ok()
    {
        jwks.prefetch();
    }
    Ok(CompositeVerifier::new(
        hs256,
        jwks,
        session,
        config.token_cache_size,
    ))
}

/// Routes a token by its shape: a compact JWS (three dot-separated parts) to
/// HS256 when its header says HS*, to the JWKS otherwise; anything else to
/// the session check. A token is only ever tried by one verifier.
pub struct CompositeVerifier {
    hs256: Option<Hs256Verifier>,
    jwks: Option<JwksVerifier>,
    session: Option<SessionVerifier>,
    cache: ExpiringCache<OwnerId>,
    /// `auth_token_cache_total{result="hit"|"miss"}`, taken once (no-ops
    /// when no metrics recorder was installed before).
    cache_hits: metrics::Counter,
    cache_misses: metrics::Counter,
}

impl CompositeVerifier {
    /// `cache_size` 0 turns the verified-token cache off.
    #[must_use]
    pub fn new(
        hs256: Option<Hs256Verifier>,
        jwks: Option<JwksVerifier>,
        session: Option<SessionVerifier>,
        cache_size: usize,
    ) -> Self {
        Self {
            hs256,
            jwks,
            session,
            cache: ExpiringCache::new(cache_size),
            cache_hits: metrics::counter!("auth_token_cache_total", "result" => "hit"),
            cache_misses: metrics::counter!("auth_token_cache_total", "result" => "miss"),
        }
    }

    /// Finds Better Auth's session table, when sessions are configured:
    /// `None` without sessions, else the table found or why not.
    pub async fn discover_sessions(&self) -> Option<Result<String, DiscoveryError>> {
        match &self.session {
            Some(s) => Some(s.discover().await),
            None => None,
        }
    }

    /// The answer of the one verifier that judges `token`, and that
    /// verifier's name (the `verifier` label of the metrics).
    async fn verify_uncached(&self, token: &str) -> (&'static str, Result<Verified, VerifyError>) {
        if looks_like_jwt(token) {
            let header = match parse_header(token) {
                Ok(header) => header,
                Err(e) => return ("none", Err(e)),
            };
            if header.alg.starts_with("HS") {
                return match &self.hs256 {
                    Some(v) => ("hs256", v.verify_detailed(token)),
                    None => (
                        "none",
                        Err(VerifyError::rejected(
                            "token algorithm is not accepted: shared-secret (HS*) tokens are not configured on the tasks service; set JWT_SECRET to the secret the token is signed with, or JWT_ACCEPT_BETTER_AUTH_SECRET=true if it is signed with BETTER_AUTH_SECRET (HS256 tokens are not revoked by sign-out)",
                        )),
                    ),
                };
            }
            return match &self.jwks {
                Some(v) => ("jwks", v.verify_detailed(token).await),
                None => (
                    "none",
                    Err(VerifyError::rejected(
                        "token algorithm is not accepted: public-key tokens are not configured",
                    )),
                ),
            };
        }
        match &self.session {
            Some(v) => ("session", v.verify_detailed(token).await),
            None => (
                "none",
                Err(VerifyError::rejected("bearer token is not a JWT")),
            ),
        }
    }
}

/// `auth_verifications_total{verifier, outcome}`: one per token that reached
/// a verifier (cache hits are counted apart). `verifier` is `hs256`, `jwks`,
/// `session`, or `none` for a token no configured verifier could take;
/// `outcome` is `ok`, `rejected`, `unavailable` or `misconfigured`.
fn record_verification(verifier: &'static str, error: Option<&VerifyError>) {
    let outcome = match error {
        None => "ok",
        Some(VerifyError::Rejected(_)) => "rejected",
        Some(VerifyError::Unavailable(_) | VerifyError::UnavailableBecause { .. }) => "unavailable",
        Some(VerifyError::Misconfigured(_)) => "misconfigured",
    };
    metrics::counter!("auth_verifications_total", "verifier" => verifier, "outcome" => outcome)
        .increment(1);
}

#[async_trait]
impl TokenVerifier for CompositeVerifier {
    async fn verify(&self, token: &str) -> Result<OwnerId, VerifyError> {
        if let Err(e) = precheck(token) {
            record_verification("none", Some(&e));
            return Err(e);
        }
        if !self.cache.enabled() {
            let (verifier, result) = self.verify_uncached(token).await;
            record_verification(verifier, result.as_ref().err());
            return result.map(|v| v.owner);
        }
        let key = token_hash(token);
        if let Some(owner) = self.cache.get(&key) {
            self.cache_hits.increment(1);
            return Ok(owner);
        }
        self.cache_misses.increment(1);
        let (verifier, result) = self.verify_uncached(token).await;
        record_verification(verifier, result.as_ref().err());
        let verified = result?;
        self.cache
            .insert(key, verified.owner.clone(), verified.valid_until);
        Ok(verified.owner)
    }

    async fn verify_cookie(&self, value: &str) -> Result<OwnerId, VerifyError> {
        precheck(value)?;
        let Some(session) = &self.session else {
            return Err(VerifyError::rejected(
                "cookie sessions need BETTER_AUTH_DATABASE_URL on the tasks service",
            ));
        };
        if !self.cache.enabled() {
            return session.verify_cookie_detailed(value).await.map(|v| v.owner);
        }
        // Its own key space: a raw token accepted as a bearer token must
        // never let the same (unsigned) value pass as a cookie.
        let key = token_hash(&format!("cookie\0{value}"));
        if let Some(owner) = self.cache.get(&key) {
            return Ok(owner);
        }
        let verified = session.verify_cookie_detailed(value).await?;
        self.cache
            .insert(key, verified.owner.clone(), verified.valid_until);
        Ok(verified.owner)
    }
}
