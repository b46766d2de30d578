//! Per-user rate limiting: a token bucket per owner id, refilled continuously.
//! Off unless `RATE_LIMIT_PER_MINUTE` is set.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Instant;

use tasks_domain::OwnerId;

const SHARDS: usize = 16;
/// Buckets kept per shard before idle (full) ones are dropped.
const MAX_BUCKETS_PER_SHARD: usize = 8192;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct RateLimiter {
    capacity: f64,
    per_second: f64,
    shards: Vec<Mutex<HashMap<OwnerId, Bucket>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl RateLimiter {
    /// `per_minute` requests per user per minute, with bursts up to `burst`.
    #[must_use]
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            capacity: f64::from(burst.max(1)),
            per_second: f64::from(per_minute) / 60.0,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Takes one request from `owner`'s bucket; `Err(seconds)` says how long
    /// until the next request would be allowed.
    pub fn check(&self, owner: &OwnerId) -> Result<(), u64> {
        let hash = self.hasher.hash_one(owner);
        let shard = &self.shards[usize::try_from(hash % SHARDS as u64).unwrap_or(0)];
        let now = Instant::now();
        let mut buckets = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS_PER_SHARD && !buckets.contains_key(owner) {
            let (capacity, rate) = (self.capacity, self.per_second);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < capacity
            });
        }
        let bucket = buckets.entry(owner.clone()).or_insert(Bucket {
            tokens: self.capacity,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_limits_then_refills() {
        let limiter = RateLimiter::new(60, 3);
        let alice = OwnerId::parse("alice").unwrap();
        let bob = OwnerId::parse("bob").unwrap();
        for _ in 0..3 {
            assert!(limiter.check(&alice).is_ok());
        }
        assert_eq!(limiter.check(&alice), Err(1));
        assert!(limiter.check(&bob).is_ok(), "buckets are per user");
    }

    #[test]
    fn retry_after_reflects_the_rate() {
        let limiter = RateLimiter::new(6, 1);
        let u = OwnerId::parse("u").unwrap();
        assert!(limiter.check(&u).is_ok());
        let wait = limiter.check(&u).unwrap_err();
        assert!((9..=10).contains(&wait), "{wait}");
    }
}
