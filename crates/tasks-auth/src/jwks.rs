//! Better Auth `jwt()` tokens, checked with the public keys its JWKS endpoint
//! publishes.
//!
//! The key set is fetched lazily (the service starts while Better Auth is
//! still down), cached, refreshed in the background once it is older than
//! `max_age`, and refetched when a token names a `kid` the cache does not
//! know (key rotation) - at most once per `refresh_cooldown`, and once for a
//! whole burst of such tokens (single flight).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tasks_domain::OwnerId;
use tasks_ports::{TokenVerifier, VerifyError};

use crate::claims::{ClaimRules, Claims, JwtHeader, Verified, parse_header, precheck, rejection};

/// Largest JWKS document accepted; Better Auth's holds a few keys of ~150 bytes.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// When nothing is cached, failed fetches are retried at most this often
/// (or every `refresh_cooldown`, if that is shorter).
const EMPTY_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// How to reach and trust a JWKS.
#[derive(Clone)]
pub struct JwksConfig {
    /// Where the key set is published, e.g. `http://localhost:3000/api/auth/jwks`.
    pub url: String,
    /// `iss` / `aud` / leeway. Better Auth sets `iss` and `aud` to the origin
    /// of its base URL; see [`origin_of`].
    pub rules: ClaimRules,
    /// Least time between two fetches caused by unknown `kid`s.
    pub refresh_cooldown: Duration,
    /// Age after which the cached set is refreshed on next use.
    pub max_age: Duration,
    /// Longest a fetch may take.
    pub fetch_timeout: Duration,
}

impl std::fmt::Debug for JwksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksConfig")
            .field("url", &tasks_pg::redact_url(&self.url))
            .field("rules", &self.rules)
            .field("refresh_cooldown", &self.refresh_cooldown)
            .field("max_age", &self.max_age)
            .field("fetch_timeout", &self.fetch_timeout)
            .finish()
    }
}

impl JwksConfig {
    /// Defaults matching jose's `createRemoteJWKSet` (cooldown 30 s, max age
    /// 10 min) with a 5 s fetch timeout.
    #[must_use]
    pub fn new(url: impl Into<String>, rules: ClaimRules) -> Self {
        Self {
            url: url.into(),
            rules,
            refresh_cooldown: Duration::from_secs(30),
            max_age: Duration::from_secs(600),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// `scheme://host[:port]` of an http(s) URL: what Better Auth puts in `iss`
/// and `aud` by default. `None` when `url` is not http(s).
#[must_use]
pub fn origin_of(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return None;
    }
    Some(parsed.origin().ascii_serialization())
}

/// Whether `url` is plain `http://` to a host other than this machine
/// (`localhost`, `*.localhost`, 127.0.0.0/8, `::1`): keys fetched that way can
/// be swapped by anyone on the path. An unparseable URL counts as remote.
#[must_use]
pub fn is_plain_http_to_remote_host(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return true;
    };
    if parsed.scheme() != "http" {
        return false;
    }
    let Some(host) = parsed.host_str() else {
        return true;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return !ip.is_loopback();
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    !(host == "localhost" || host.ends_with(".localhost"))
}

/// One usable key of the set.
struct CachedKey {
    kid: Option<String>,
    /// The algorithms this key may verify, decided by the key itself.
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
    /// One validation per algorithm, in the order of `algorithms`.
    validations: Vec<Validation>,
}

struct KeySet {
    keys: Vec<CachedKey>,
    fetched_at: Instant,
}

enum Lookup<'a> {
    Found(&'a CachedKey, usize),
    UnknownKid,
    WrongAlgorithm,
}

impl KeySet {
    fn find(&self, header: &JwtHeader, alg: Algorithm) -> Lookup<'_> {
        let candidates: Vec<&CachedKey> = match &header.kid {
            // A kid is only ever compared with the kids of the cached set.
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                .collect(),
            None => self
                .keys
                .iter()
                .filter(|k| k.algorithms.contains(&alg))
                .collect(),
        };
        if header.kid.is_none() && candidates.len() > 1 {
            // Without a kid the choice must be unambiguous.
            return Lookup::UnknownKid;
        }
        let Some(key) = candidates.first() else {
            return Lookup::UnknownKid;
        };
        match key.algorithms.iter().position(|a| *a == alg) {
            Some(i) => Lookup::Found(key, i),
            None => Lookup::WrongAlgorithm,
        }
    }
}

/// What the last fetch attempt produced.
#[derive(Default)]
struct RefreshState {
    last_error: Option<String>,
}

struct Inner {
    config: JwksConfig,
    http: reqwest::Client,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Serializes fetches; waiters re-check `generation` when they get it.
    refresh: tokio::sync::Mutex<RefreshState>,
    /// Bumped after every fetch attempt, successful or not.
    generation: AtomicU64,
    /// Milliseconds since `epoch` of the last fetch attempt, plus one (0 = never).
    last_attempt_ms: AtomicU64,
    epoch: Instant,
    background_refresh: AtomicBool,
    fetches: AtomicU64,
}

/// Verifies JWTs signed by a key of a remote JWKS (Better Auth's `jwt()`
/// plugin: EdDSA by default; ES256, RS256, PS256 also work). Cheap to clone.
#[derive(Clone)]
pub struct JwksVerifier {
    inner: Arc<Inner>,
}

impl JwksVerifier {
    /// Prepares the verifier without contacting the endpoint.
    ///
    /// # Errors
    /// The URL is not http(s), or the HTTP client cannot be built.
    pub fn new(config: JwksConfig) -> anyhow::Result<Self> {
        if origin_of(&config.url).is_none() {
            anyhow::bail!("JWKS URL must be an http:// or https:// URL");
        }
        let http = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .connect_timeout(config.fetch_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("tasks-auth/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the JWKS HTTP client")?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                http,
                keys: RwLock::new(None),
                refresh: tokio::sync::Mutex::new(RefreshState::default()),
                generation: AtomicU64::new(0),
                last_attempt_ms: AtomicU64::new(0),
                epoch: Instant::now(),
                background_refresh: AtomicBool::new(false),
                fetches: AtomicU64::new(0),
            }),
        })
    }

    /// Fetches the key set in the background; a failure is only logged (the
    /// next verification tries again). Needs a Tokio runtime.
    pub fn prefetch(&self) {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let seen = inner.generation.load(Ordering::Acquire);
            inner.refresh(seen).await;
        });
    }

    /// How many times the JWKS was requested (for tests and metrics).
    #[must_use]
    pub fn fetch_count(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// Verifies `token` and tells until when it holds.
    ///
    /// # Errors
    /// [`VerifyError::Rejected`] for a token that is not acceptable;
    /// [`VerifyError::Unavailable`] when the key set cannot be fetched and
    /// the cache cannot decide.
    pub async fn verify_detailed(&self, token: &str) -> Result<Verified, VerifyError> {
        precheck(token)?;
        let header = parse_header(token)?;
        let alg = asymmetric_algorithm(&header.alg)?;
        let set = self.inner.key_set_for(&header, alg).await?;
        match set.find(&header, alg) {
            Lookup::Found(key, i) => {
                let data = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validations[i])
                    .map_err(|e| rejection(&e, &self.inner.config.rules))?;
                data.claims.verified(&self.inner.config.rules)
            }
            Lookup::WrongAlgorithm => Err(VerifyError::rejected(
                "token algorithm is not accepted: it does not match the signing key's algorithm",
            )),
            Lookup::UnknownKid => Err(VerifyError::rejected(
                "token key id (kid) is not in the published key set",
            )),
        }
    }
}

#[async_trait]
impl TokenVerifier for JwksVerifier {
    async fn verify(&self, token: &str) -> Result<OwnerId, VerifyError> {
        self.verify_detailed(token).await.map(|v| v.owner)
    }
}

/// The header's algorithm, if it is one a JWKS key could ever verify.
fn asymmetric_algorithm(alg: &str) -> Result<Algorithm, VerifyError> {
    match alg {
        "EdDSA" => Ok(Algorithm::EdDSA),
        "ES256" => Ok(Algorithm::ES256),
        "ES384" => Ok(Algorithm::ES384),
        "RS256" => Ok(Algorithm::RS256),
        "RS384" => Ok(Algorithm::RS384),
        "RS512" => Ok(Algorithm::RS512),
        "PS256" => Ok(Algorithm::PS256),
        "PS384" => Ok(Algorithm::PS384),
        "PS512" => Ok(Algorithm::PS512),
        "ES512" => Err(VerifyError::rejected(
            "token algorithm is not accepted: ES512 is not supported by this service",
        )),
        a if a.starts_with("HS") => Err(VerifyError::rejected(
            "token algorithm is not accepted: shared-secret (HS*) tokens cannot be verified with public keys",
        )),
        _ => Err(VerifyError::rejected("token algorithm is not accepted")),
    }
}

impl Inner {
    fn current(&self) -> Option<Arc<KeySet>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn since_last_attempt(&self) -> Option<Duration> {
        match self.last_attempt_ms.load(Ordering::Acquire) {
            0 => None,
            ms => {
                let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
                Some(Duration::from_millis(now.saturating_sub(ms - 1)))
            }
        }
    }

    /// A key set in which to look for the token's key: the cached one when it
    /// knows the kid, else whatever a (single-flight, rate-limited) refetch
    /// gives.
    async fn key_set_for(
        self: &Arc<Self>,
        header: &JwtHeader,
        alg: Algorithm,
    ) -> Result<Arc<KeySet>, VerifyError> {
        let seen = self.generation.load(Ordering::Acquire);
        if let Some(set) = self.current() {
            if set.fetched_at.elapsed() >= self.config.max_age {
                self.refresh_in_background();
            }
            if !matches!(set.find(header, alg), Lookup::UnknownKid) {
                return Ok(set);
            }
        }
        let outcome = self.refresh(seen).await;
        match self.current() {
            Some(set) => {
                if let (Lookup::UnknownKid, Some(error)) = (set.find(header, alg), outcome) {
                    // The kid may be a new key we could not fetch: we cannot decide.
                    return Err(self.keys_unavailable(anyhow::anyhow!(
                        "token key id not cached and the JWKS could not be fetched: {error}"
                    )));
                }
                Ok(set)
            }
            None => Err(self.keys_unavailable(anyhow::anyhow!(
                "no JWKS cached and it could not be fetched: {}",
                outcome.unwrap_or_else(|| "not fetched yet".to_owned())
            ))),
        }
    }

    /// A 503 whose detail tells the frontend developer what failed, with the
    /// URL redacted (no password, no query string).
    fn keys_unavailable(&self, source: anyhow::Error) -> VerifyError {
        VerifyError::UnavailableBecause {
            detail: format!(
                "The token signing keys could not be fetched from {} (JWKS_URL, default BETTER_AUTH_URL + /api/auth/jwks); check that the tasks service can reach Better Auth. Retry shortly",
                tasks_pg::redact_url(&self.config.url)
            ),
            source,
        }
    }

    fn refresh_in_background(self: &Arc<Self>) {
        let due = self
            .since_last_attempt()
            .is_none_or(|d| d >= self.config.refresh_cooldown);
        if !due || self.background_refresh.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let seen = inner.generation.load(Ordering::Acquire);
            inner.refresh(seen).await;
            inner.background_refresh.store(false, Ordering::Release);
        });
    }

    /// Fetches the key set unless another task did since `seen`, or the last
    /// attempt is too recent. Returns the error of the attempt that counts
    /// (this one, or the one it deferred to), `None` when it succeeded.
    async fn refresh(&self, seen: u64) -> Option<String> {
        let mut state = self.refresh.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return state.last_error.clone();
        }
        let min_interval = if self.current().is_some() {
            self.config.refresh_cooldown
        } else {
            self.config.refresh_cooldown.min(EMPTY_RETRY_INTERVAL)
        };
        if self.since_last_attempt().is_some_and(|d| d < min_interval) {
            return state.last_error.clone();
        }
        let result = self.fetch().await;
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_attempt_ms
            .store(now_ms.saturating_add(1), Ordering::Release);
        state.last_error = match result {
            Ok(set) => {
                metrics::counter!("auth_jwks_refreshes_total", "outcome" => "ok").increment(1);
                tracing::debug!(keys = set.keys.len(), "JWKS fetched");
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(set));
                None
            }
            Err(e) => {
                metrics::counter!("auth_jwks_refreshes_total", "outcome" => "error").increment(1);
                let cached = self.current().is_some();
                tracing::warn!(
                    error = format!("{e:#}"),
                    cached_keys = cached,
                    "could not fetch the JWKS"
                );
                Some(format!("{e:#}"))
            }
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        state.last_error.clone()
    }

    async fn fetch(&self) -> anyhow::Result<KeySet> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        // Only the redacted URL ever reaches an error message (and so a log
        // line): `JWKS_URL` may carry credentials. reqwest's own errors print
        // the URL they were sent to, so theirs is removed.
        let url = tasks_pg::redact_url(&self.config.url);
        let mut response = self
            .http
            .get(&self.config.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(reqwest::Error::without_url)
            .with_context(|| format!("requesting {url}"))?;
        if !response.status().is_success() {
            anyhow::bail!("{url} answered {}", response.status());
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            anyhow::bail!("{url} sent a JWKS larger than {MAX_JWKS_BYTES} bytes");
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(reqwest::Error::without_url)
            .with_context(|| format!("reading {url}"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                anyhow::bail!("{url} sent a JWKS larger than {MAX_JWKS_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        let keys =
            parse_jwks(&body, &self.config.rules).with_context(|| format!("reading {url}"))?;
        Ok(KeySet {
            keys,
            fetched_at: Instant::now(),
        })
    }
}

/// The usable signing keys of a JWKS document. Keys this service cannot or
/// must not use (symmetric, encryption-only, unsupported curves) are skipped
/// with a log line; a document without any usable key is an error.
fn parse_jwks(body: &[u8], rules: &ClaimRules) -> anyhow::Result<Vec<CachedKey>> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let doc: Document = serde_json::from_slice(body).context("the JWKS is not valid JSON")?;
    let mut keys = Vec::new();
    for raw in doc.keys {
        match cached_key(&raw, rules) {
            Ok(key) => keys.push(key),
            Err(reason) => {
                let kid = raw.get("kid").and_then(|k| k.as_str()).unwrap_or("-");
                tracing::warn!(kid, reason = %reason, "ignoring a JWKS key");
            }
        }
    }
    if keys.is_empty() {
        anyhow::bail!("the JWKS holds no usable signing key");
    }
    Ok(keys)
}

fn cached_key(raw: &serde_json::Value, rules: &ClaimRules) -> Result<CachedKey, String> {
    let field = |name: &str| raw.get(name).and_then(serde_json::Value::as_str);
    if field("use").is_some_and(|u| u != "sig") {
        return Err("not a signing key (use is not \"sig\")".into());
    }
    if let Some(ops) = raw.get("key_ops").and_then(serde_json::Value::as_array)
        && !ops.iter().any(|o| o.as_str() == Some("verify"))
    {
        return Err("key_ops does not include \"verify\"".into());
    }
    let kty = field("kty").ok_or("no kty")?;
    let crv = field("crv");
    // What the key type allows; the JWK's own `alg` narrows it to one.
    let by_type: Vec<Algorithm> = match (kty, crv) {
        ("OKP", Some("Ed25519")) => vec![Algorithm::EdDSA],
        ("EC", Some("P-256")) => vec![Algorithm::ES256],
        ("EC", Some("P-384")) => vec![Algorithm::ES384],
        ("RSA", _) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        ("oct", _) => return Err("symmetric keys are never taken from a JWKS".into()),
        (kty, crv) => {
            return Err(format!(
                "unsupported key type {kty}{}",
                crv.map(|c| format!("/{c}")).unwrap_or_default()
            ));
        }
    };
    let algorithms = match field("alg") {
        None => by_type,
        Some(alg) => {
            let alg = asymmetric_algorithm(alg).map_err(|_| format!("unsupported alg {alg}"))?;
            if !by_type.contains(&alg) {
                return Err(format!("alg {alg:?} does not fit key type {kty}"));
            }
            vec![alg]
        }
    };
    let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| format!("invalid JWK: {e}"))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("invalid JWK: {e}"))?;
    let validations = algorithms.iter().map(|a| rules.validation(&[*a])).collect();
    Ok(CachedKey {
        kid: field("kid").map(str::to_owned),
        algorithms,
        key,
        validations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_remote_unless_loopback() {
        for url in [
            "http://auth.example.com",
            "http://10.0.0.5:3000/api/auth/jwks",
            "http://user:pw@auth.example/jwks",
            "http://localhost.evil.example",
            "http://[2001:db8::1]/",
            "not a url",
        ] {
            assert!(is_plain_http_to_remote_host(url), "{url}");
        }
        for url in [
            "https://auth.example.com",
            "http://localhost:3000",
            "http://LOCALHOST./x",
            "http://app.localhost:3000",
            "http://127.0.0.1:3000/api/auth/jwks",
            "http://127.1.2.3",
            "http://[::1]:3000",
        ] {
            assert!(!is_plain_http_to_remote_host(url), "{url}");
        }
    }
}
