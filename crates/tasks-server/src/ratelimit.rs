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

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};
use tasks_domain::OwnerId;

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
