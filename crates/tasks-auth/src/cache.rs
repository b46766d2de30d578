//! A bounded cache of successful verifications, keyed by a SHA-256 of the
//! token so that no token is kept in memory longer than the request needs it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use sha2::{Digest as _, Sha256};
use tasks_domain::OwnerId;

pub(crate) type TokenHash = [u8; 32];

pub(crate) fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

struct Entry {
    owner: OwnerId,
    until: Instant,
}

/// Successful verifications only; rejections are never stored, so a token
/// that failed for a transient reason is checked again on the next request.
pub(crate) struct TokenCache {
    capacity: usize,
    entries: Mutex<HashMap<TokenHash, Entry>>,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::with_capacity(capacity.min(1024))),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub(crate) fn get(&self, key: &TokenHash) -> Option<OwnerId> {
        let mut entries = self.lock();
        let entry = entries.get(key)?;
        if entry.until > Instant::now() {
            return Some(entry.owner.clone());
        }
        entries.remove(key);
        None
    }

    /// Remembers `owner` for `key` until `valid_until` (wall clock), or not at
    /// all when that is already past.
    pub(crate) fn insert(&self, key: TokenHash, owner: OwnerId, valid_until: SystemTime) {
        if self.capacity == 0 {
            return;
        }
        let Ok(remaining) = valid_until.duration_since(SystemTime::now()) else {
            return;
        };
        let now = Instant::now();
        let Some(until) = now.checked_add(remaining) else {
            return;
        };
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, e| e.until > now);
            if entries.len() >= self.capacity {
                // Still full of live entries: drop an arbitrary sixteenth
                // (HashMap order is seeded per map, so an attacker cannot
                // aim at particular entries). Cheaper than LRU bookkeeping on
                // every hit, and a dropped entry only costs one verification.
                let evict = (self.capacity / 16).max(1);
                let victims: Vec<TokenHash> = entries.keys().take(evict).copied().collect();
                for victim in victims {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(key, Entry { owner, until });
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenHash, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every operation is a single HashMap call), so poisoning is ignored.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn owner(s: &str) -> OwnerId {
        OwnerId::parse(s).unwrap()
    }

    #[test]
    fn hit_until_expiry_then_miss() {
        let cache = TokenCache::new(10);
        let key = token_hash("t");
        cache.insert(key, owner("u"), SystemTime::now() + Duration::from_secs(60));
        assert_eq!(cache.get(&key), Some(owner("u")));
        assert_eq!(cache.get(&token_hash("other")), None);
        let past = token_hash("past");
        cache.insert(past, owner("u"), SystemTime::now() - Duration::from_secs(1));
        assert_eq!(cache.get(&past), None);
    }

    #[test]
    fn bounded_size() {
        let cache = TokenCache::new(64);
        for i in 0..1000 {
            cache.insert(
                token_hash(&i.to_string()),
                owner("u"),
                SystemTime::now() + Duration::from_secs(60),
            );
            assert!(cache.len() <= 64);
        }
        // The newest entry always survives its own insertion.
        assert!(cache.get(&token_hash("999")).is_some());
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = TokenCache::new(0);
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
