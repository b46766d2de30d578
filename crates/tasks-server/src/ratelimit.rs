//! Per-user rate limiting: governor's keyed GCRA limiter (a token bucket per
//! owner id, refilled continuously) with a hard bound on the number of users
//! it remembers. Off unless `RATE_LIMIT_PER_MINUTE` is set.
//!
//! Memory is bounded twice:
//! - every [`HOUSEKEEPING_INTERVAL`] (and whenever the cap is exceeded), users
//!   whose bucket has refilled are forgotten (`retain_recent`): they are
//!   indistinguishable from a user never seen, so nothing changes for them;
//! - if more than `RATE_LIMIT_MAX_KEYS` users are still remembered after
//!   that (that many users all active within one refill period), the limiter
//!   forgets everybody and starts afresh. An evicted user gets a fresh, full
//!   bucket: a few extra requests for those who were being throttled, once,
//!   which is the price of a hard memory bound. Size the cap above the number
//!   of users you expect within `RATE_LIMIT_BURST / RATE_LIMIT_PER_MINUTE`
//!   minutes.
//!
//! With `RATE_LIMIT_REDIS_URL`, [`UserRateLimit`] asks Redis first
//! ([`RedisLimiter`]): the same GCRA, one atomic script per request on a
//! bucket shared by every instance, so a user's limit is the same with one
//! instance or twenty. When Redis does not answer within
//! `RATE_LIMIT_REDIS_TIMEOUT` (or refuses), this instance's own limiter
//! answers instead, a warning is logged once per outage, and Redis is tried
//! again after [`REDIS_RETRY_INTERVAL`]. A request never fails because Redis
//! is down; during an outage each instance enforces the limit on its own.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tasks_domain::OwnerId;

use crate::settings::RedisLimit;

/// How often refilled buckets are dropped and the map shrunk.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);

type Keyed = DefaultKeyedRateLimiter<OwnerId>;

pub struct RateLimiter {
    quota: Quota,
    max_keys: usize,
    /// Replaced by a fresh limiter when the cap cannot be kept otherwise.
    current: RwLock<Arc<Keyed>>,
    /// Only one thread evicts at a time; the others carry on.
    evicting: Mutex<()>,
}

impl RateLimiter {
    /// `per_minute` requests per user per minute, with bursts up to `burst`,
    /// remembering at most `max_keys` users (plus those whose requests are in
    /// flight while an eviction runs).
    #[must_use]
    pub fn new(per_minute: u32, burst: u32, max_keys: usize) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        Self {
            quota,
            max_keys: max_keys.max(1),
            current: RwLock::new(Arc::new(Keyed::keyed(quota))),
            evicting: Mutex::new(()),
        }
    }

    fn limiter(&self) -> Arc<Keyed> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Takes one request from `owner`'s bucket; `Err(seconds)` says how long
    /// until the next request would be allowed (at least 1).
    pub fn check(&self, owner: &OwnerId) -> Result<(), u64> {
        let limiter = self.limiter();
        let outcome = limiter.check_key(owner);
        if limiter.len() > self.max_keys {
            self.enforce_cap();
        }
        outcome.map_err(|not_until| {
            crate::metrics::record_rate_limited("local");
            let wait = not_until.wait_time_from(limiter.clock().now());
            wait.as_secs_f64().ceil().max(1.0) as u64
        })
    }

    /// Number of users currently remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.limiter().len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets users whose bucket has refilled and releases the memory.
    pub fn housekeeping(&self) {
        let limiter = self.limiter();
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }

    fn enforce_cap(&self) {
        let Ok(_guard) = self.evicting.try_lock() else {
            return;
        };
        self.housekeeping();
        let remembered = self.len();
        if remembered > self.max_keys {
            tracing::warn!(
                remembered,
                max = self.max_keys,
                "rate limiter over RATE_LIMIT_MAX_KEYS with every user active: starting afresh (every user gets a full bucket)"
            );
            *self.current.write().unwrap_or_else(PoisonError::into_inner) =
                Arc::new(Keyed::keyed(self.quota));
        }
    }

    /// Runs [`RateLimiter::housekeeping`] every [`HOUSEKEEPING_INTERVAL`] on
    /// the current Tokio runtime until the limiter is dropped.
    pub fn spawn_housekeeping(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(HOUSEKEEPING_INTERVAL);
            interval.tick().await;
            loop {
                interval.tick().await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.housekeeping();
            }
        });
    }
}

/// The per-user limit of a request: the shared one in Redis when configured
/// and reachable, else this instance's own.
pub struct UserRateLimit {
    local: Arc<RateLimiter>,
    shared: Option<RedisLimiter>,
}

impl UserRateLimit {
    #[must_use]
    pub fn new(local: Arc<RateLimiter>, shared: Option<RedisLimiter>) -> Self {
        Self { local, shared }
    }

    /// Takes one request from `owner`'s bucket; `Err(seconds)` says how long
    /// until the next request would be allowed (at least 1).
    pub async fn check(&self, owner: &OwnerId) -> Result<(), u64> {
        if let Some(shared) = &self.shared
            && let Some(verdict) = shared.check(owner).await
        {
            return verdict;
        }
        self.local.check(owner)
    }
}

/// After Redis failed, requests use the local limiter for this long before
/// Redis is tried again, so that an unreachable Redis costs at most one
/// timeout per interval, not one per request.
pub const REDIS_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// GCRA (the algorithm governor implements locally) in one atomic script.
/// The bucket is a "theoretical arrival time" (TAT) in microseconds of the
/// Redis server's clock, so instances' clocks do not matter. A request is
/// allowed when `TAT - tolerance <= now`; it then moves TAT one emission
/// interval on. The key expires when the bucket would be full again.
/// Returns `{1, 0}` (allowed) or `{0, microseconds to wait}`.
///
/// Hand-written rather than a crate: the Redis GCRA crates either need the
/// redis-cell module on the server or are unmaintained; this is the
/// textbook algorithm in a dozen lines, giving the local limiter's answers
/// for the same quota (`tests/api/shared_limits.rs`).
const GCRA_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, allow_at - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
  'PX', string.format('%.0f', math.ceil((new_tat - now) / 1000)))
return {1, 0}
";

/// The per-user limit in Redis, shared by every instance that uses the same
/// Redis and key prefix.
pub struct RedisLimiter {
    connection: ConnectionManager,
    script: redis::Script,
    prefix: String,
    /// Microseconds per request (the emission interval).
    interval_us: u64,
    /// Microseconds of credit a full bucket holds beyond one request.
    tolerance_us: u64,
    timeout: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` before which Redis is not asked.
    skip_until_ms: AtomicU64,
    /// Whether the last attempt failed (a warning was logged for it).
    degraded: AtomicBool,
}

impl RedisLimiter {
    /// Nothing is contacted here: the connection is opened on first use and
    /// re-opened after a failure, each attempt bounded by `timeout`.
    ///
    /// # Errors
    /// The URL cannot be used.
    pub fn new(config: &RedisLimit, per_minute: u32, burst: u32) -> anyhow::Result<Self> {
        use secrecy::ExposeSecret as _;
        let client = redis::Client::open(config.url.expose_secret()).map_err(|e| {
            anyhow::anyhow!(
                "RATE_LIMIT_REDIS_URL {} is invalid ({:?})",
                tasks_store::redact_url(config.url.expose_secret()),
                e.kind()
            )
        })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(config.timeout);
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)
            .context("setting up the Redis connection for RATE_LIMIT_REDIS_URL")?;
        let interval_us = 60_000_000 / u64::from(per_minute.max(1));
        Ok(Self {
            connection,
            script: redis::Script::new(GCRA_SCRIPT),
            prefix: config.prefix.clone(),
            interval_us,
            tolerance_us: interval_us * u64::from(burst.max(1) - 1),
            timeout: config.timeout,
            epoch: Instant::now(),
            skip_until_ms: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Redis's verdict, or `None` when Redis could not give one in time.
    pub async fn check(&self, owner: &OwnerId) -> Option<Result<(), u64>> {
        if self.now_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let mut connection = self.connection.clone();
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("{}{}", self.prefix, owner.as_str()))
            .arg(self.interval_us)
            .arg(self.tolerance_us);
        let call = invocation.invoke_async::<(i64, i64)>(&mut connection);
        let failure = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((allowed, wait_us))) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: the rate limit is shared again");
                }
                if allowed == 1 {
                    return Some(Ok(()));
                }
                crate::metrics::record_rate_limited("redis");
                let wait = u64::try_from(wait_us).unwrap_or(0);
                return Some(Err(wait.div_ceil(1_000_000).max(1)));
            }
            // redis-rs's errors describe the failure (kind, I/O error),
            // never the URL, which may hold a password.
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        self.skip_until_ms.store(
            self.now_ms()
                .saturating_add(u64::try_from(REDIS_RETRY_INTERVAL.as_millis()).unwrap_or(0)),
            Ordering::Relaxed,
        );
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %failure,
                "Redis is unreachable: this instance limits requests on its own until it answers again"
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> OwnerId {
        OwnerId::parse(name).unwrap()
    }

    #[test]
    fn allows_a_burst_then_limits_then_refills() {
        let limiter = RateLimiter::new(60, 3, 1000);
        let alice = user("alice");
        let bob = user("bob");
        for _ in 0..3 {
            assert!(limiter.check(&alice).is_ok());
        }
        assert_eq!(limiter.check(&alice), Err(1));
        assert!(limiter.check(&bob).is_ok(), "buckets are per user");
    }

    #[test]
    fn retry_after_reflects_the_rate() {
        let limiter = RateLimiter::new(6, 1, 1000);
        let u = user("u");
        assert!(limiter.check(&u).is_ok());
        let wait = limiter.check(&u).unwrap_err();
        assert!((9..=10).contains(&wait), "{wait}");
    }

    #[test]
    fn many_distinct_subjects_never_grow_it_past_its_cap() {
        // A slow refill (one request per minute, burst 5): no bucket refills
        // during the test, so housekeeping alone could not keep the bound.
        let cap = 1000;
        let limiter = RateLimiter::new(1, 5, cap);
        let mut most = 0;
        for i in 0..20_000 {
            assert!(limiter.check(&user(&format!("user-{i}"))).is_ok());
            most = most.max(limiter.len());
        }
        assert!(most <= cap, "{most} users remembered, cap {cap}");
        assert!(!limiter.is_empty());
    }

    #[test]
    fn an_evicted_user_gets_a_fresh_bucket_and_others_are_unaffected() {
        let limiter = RateLimiter::new(1, 2, 10);
        let heavy = user("heavy");
        assert!(limiter.check(&heavy).is_ok());
        assert!(limiter.check(&heavy).is_ok());
        assert!(limiter.check(&heavy).is_err(), "throttled");
        // Ten more active users push the limiter over its cap of 10.
        for i in 0..10 {
            assert!(limiter.check(&user(&format!("u{i}"))).is_ok());
        }
        assert!(limiter.len() <= 10);
        assert!(
            limiter.check(&heavy).is_ok(),
            "documented: forgotten users start with a full bucket"
        );
    }

    #[test]
    fn housekeeping_keeps_users_whose_bucket_has_not_refilled() {
        let limiter = RateLimiter::new(1, 1, 100);
        let alice = user("alice");
        assert!(limiter.check(&alice).is_ok());
        limiter.housekeeping();
        assert_eq!(limiter.len(), 1);
        assert!(limiter.check(&alice).is_err(), "still throttled");
    }
}
