//! Bounded caches of verification answers, keyed by a SHA-256 of the token so
//! that no token is kept in memory longer than the request needs it.
//!
//! The storage is `quick_cache` (a well-kept, dependency-light concurrent
//! cache): a hard bound on the number of entries, sharded locks instead of
//! one global mutex, and CLOCK-Pro style eviction, under which a flood of
//! one-off keys (an attacker's made-up tokens) is evicted before the entries
//! that are hit again. Each entry carries its own deadline, checked on read;
//! an expired entry is dropped then or evicted like any other.

use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256};

pub(crate) type TokenHash = [u8; 32];

pub(crate) fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A bounded map from token hashes to values that hold until a deadline.
pub(crate) struct ExpiringCache<V: Clone> {
    entries: Option<quick_cache::sync::Cache<TokenHash, (V, Instant)>>,
}

impl<V: Clone> ExpiringCache<V> {
    /// At most `capacity` entries; 0 turns the cache off.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    pub(crate) fn get(&self, key: &TokenHash) -> Option<V> {
        let entries = self.entries.as_ref()?;
        let (value, until) = entries.get(key)?;
        if until > Instant::now() {
            return Some(value);
        }
        entries.remove(key);
        None
    }

    /// Remembers `value` for `key` until `valid_until` (wall clock), or not
    /// at all when that is already past.
    pub(crate) fn insert(&self, key: TokenHash, value: V, valid_until: SystemTime) {
        let Ok(remaining) = valid_until.duration_since(SystemTime::now()) else {
            return;
        };
        self.insert_for(key, value, remaining);
    }

    /// Remembers `value` for `key` for `ttl` from now.
    pub(crate) fn insert_for(&self, key: TokenHash, value: V, ttl: Duration) {
        let Some(entries) = &self.entries else {
            return;
        };
        if ttl.is_zero() {
            return;
        }
        let Some(until) = Instant::now().checked_add(ttl) else {
            return;
        };
        entries.insert(key, (value, until));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries
            .as_ref()
            .map_or(0, quick_cache::sync::Cache::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasks_domain::OwnerId;

    fn owner(s: &str) -> OwnerId {
        OwnerId::parse(s).unwrap()
    }

    #[test]
    fn hit_until_expiry_then_miss() {
        let cache = ExpiringCache::new(10);
        let key = token_hash("t");
        cache.insert(key, owner("u"), SystemTime::now() + Duration::from_secs(60));
        assert_eq!(cache.get(&key), Some(owner("u")));
        assert_eq!(cache.get(&token_hash("other")), None);
        let past = token_hash("past");
        cache.insert(past, owner("u"), SystemTime::now() - Duration::from_secs(1));
        assert_eq!(cache.get(&past), None);
    }

    #[test]
    fn expired_entries_are_not_returned() {
        let cache = ExpiringCache::new(10);
        let key = token_hash("t");
        cache.insert_for(key, (), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cache.get(&key), None);
        assert_eq!(cache.len(), 0, "an expired entry is dropped when read");
    }

    #[test]
    fn bounded_size() {
        let cache = ExpiringCache::new(64);
        for i in 0..10_000 {
            cache.insert(
                token_hash(&i.to_string()),
                owner("u"),
                SystemTime::now() + Duration::from_secs(60),
            );
            assert!(cache.len() <= 64, "{} entries", cache.len());
        }
    }

    #[test]
    fn hot_entries_survive_a_flood_of_one_off_keys() {
        let cache = ExpiringCache::new(256);
        let hot = token_hash("hot");
        cache.insert_for(hot, (), Duration::from_secs(60));
        for i in 0..100_000 {
            cache.insert_for(token_hash(&i.to_string()), (), Duration::from_secs(60));
            if i % 50 == 0 {
                assert!(cache.get(&hot).is_some(), "hot entry evicted after {i}");
            }
        }
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = ExpiringCache::new(0);
        assert!(!cache.enabled());
        let key = token_hash("t");
        cache.insert(key, owner("u"), SystemTime::now() + Duration::from_secs(60));
        assert_eq!(cache.get(&key), None);
    }

    #[test]
    fn key_is_a_hash_not_the_token() {
        let h = token_hash("secret-token");
        assert_eq!(h.len(), 32);
        assert!(!h.windows(6).any(|w| w == b"secret"));
    }
}
