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

/// The lookup, always parameterized, sent as an unnamed statement with its
/// parameter type given (`query_typed`): one round trip, and nothing that
/// outlives the statement on the server, so it works behind a PgBouncer in
/// transaction mode. Expiry is compared here, in Rust, against the current
/// UTC instant: `"expiresAt"` is read as an instant whether the column is
/// `timestamptz` or `timestamp` (whose value is taken as UTC, as Better
/// Auth's ORMs write it), never converted through the session's time zone.
const SESSION_QUERY: &str = r#"SELECT "userId", "expiresAt" FROM "session" WHERE "token" = $1"#;

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
}

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
        })
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
        let raw = session_token(token, self.secret.as_deref())?;
        let key = token_hash(&raw);
        if self.rejected.get(&key).is_some() {
            return Err(VerifyError::rejected(UNKNOWN_SESSION));
        }
        let row = self.lookup(&raw).await?;
        let unavailable = |e: anyhow::Error| VerifyError::Unavailable(e);
        let now = SystemTime::now();
        let found = match row {
            None => None,
            Some(row) => {
                let user_id: String = row.try_get(0).map_err(|e| {
                    unavailable(anyhow::Error::new(e).context("reading session.userId"))
                })?;
                let expires_at: SystemTime =
                    row.try_get(1).map_err(|e| {
                        unavailable(anyhow::Error::new(e).context(
                            "reading session.expiresAt (expected timestamptz or timestamp)",
                        ))
                    })?;
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
        let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] = [(&raw, Type::TEXT)];
        // `discard`: the connection may be mid-query or broken, never hand it
        // out again.
        let (result, discard) = {
            let mut query = std::pin::pin!(client.query_typed_opt(SESSION_QUERY, &params));
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
}

/// The raw session token inside `token` (raw, signed, or percent-encoded
/// signed), after checking the signature when `secret` is known.
pub(crate) fn session_token(token: &str, secret: Option<&[u8]>) -> Result<String, VerifyError> {
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
        assert_eq!(session_token(RAW, Some(SECRET)).unwrap(), RAW);
        assert_eq!(session_token(RAW, None).unwrap(), RAW);
    }

    #[test]
    fn signed_token_standard_base64_with_padding() {
        let t = signed(RAW, SECRET);
        assert!(t.ends_with('='));
        assert_eq!(session_token(&t, Some(SECRET)).unwrap(), RAW);
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
            assert_eq!(session_token(&t, Some(SECRET)).unwrap(), RAW, "{sig}");
        }
    }

    #[test]
    fn percent_encoded_signed_token() {
        let t = signed(RAW, SECRET)
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert_eq!(session_token(&t, Some(SECRET)).unwrap(), RAW);
    }

    #[test]
    fn rejects_signature_made_with_another_secret() {
        let t = signed(RAW, b"another-secret-entirely-000000000");
        match session_token(&t, Some(SECRET)) {
            Err(VerifyError::Rejected(m)) => assert_eq!(m, "session token signature is invalid"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_signature_of_another_token() {
        let sig = signed("SomeOtherTokenSomeOtherToken0000", SECRET);
        let (_, sig) = sig.split_once('.').unwrap();
        let t = format!("{RAW}.{sig}");
        assert!(session_token(&t, Some(SECRET)).is_err());
    }

    #[test]
    fn without_secret_the_signature_is_only_parsed() {
        let t = signed(RAW, b"unknown-secret-unknown-secret-00");
        assert_eq!(session_token(&t, None).unwrap(), RAW);
        assert!(session_token(&format!("{RAW}.not-a-mac"), None).is_err());
    }

    #[test]
    fn rejects_malformed_tokens() {
        let long = "a".repeat(300);
        for bad in [".sig", "a b", "tok\u{1}en", "%zz", "%", long.as_str(), "é"] {
            assert!(session_token(bad, Some(SECRET)).is_err(), "{bad:?}");
        }
        let truncated = &signed(RAW, SECRET)[..50];
        assert!(session_token(truncated, Some(SECRET)).is_err());
    }
}
