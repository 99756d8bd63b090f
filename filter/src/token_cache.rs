//! Verified tokens, remembered until they expire, and tokens whose signature failed, remembered
//! for a while.
//!
//! RSA verification costs over a millisecond under V8, and an MCP session sends the same token
//! on every request, so each VM keeps what it verified, keyed by a SHA-256 of the token (the
//! token itself is never kept as a key). A forged token replayed in a loop would cost that
//! millisecond every time: its failed signature is remembered too, so the replay costs a hash.

use std::collections::HashMap;
use std::rc::Rc;

use crate::verify::{digest, VerifiedToken};

/// How long a failed signature is remembered: a key rotation that could make it valid (a new key
/// under the same `kid`) also clears the memory (`retain_keys`).
const REFUSED_SECONDS: i64 = 300;

pub struct TokenCache {
    entries: HashMap<[u8; 32], Rc<VerifiedToken>>,
    /// Digests of tokens whose signature failed, with when to forget them.
    refused: HashMap<[u8; 32], i64>,
    capacity: usize,
    clock_skew_seconds: i64,
}

impl TokenCache {
    pub fn new(capacity: usize, clock_skew_seconds: i64) -> Self {
        Self {
            entries: HashMap::new(),
            refused: HashMap::new(),
            capacity,
            clock_skew_seconds,
        }
    }

    /// The verified token, if it was seen before and is still within its lifetime at `now`.
    pub fn get(&mut self, token: &str, now: i64) -> Option<Rc<VerifiedToken>> {
        let key = digest(token);
        let entry = self.entries.get(&key)?;
        if self.is_live(entry, now) {
            Some(Rc::clone(entry))
        } else {
            self.entries.remove(&key);
            None
        }
    }

    /// Remembers `verified` under its own digest.
    pub fn insert(&mut self, verified: Rc<VerifiedToken>, now: i64) {
        if self.entries.len() >= self.capacity {
            let skew = self.clock_skew_seconds;
            self.entries
                .retain(|_, entry| now <= entry.expires_at.saturating_add(skew));
            if self.entries.len() >= self.capacity {
                // Still full of live tokens: start over rather than track recency on the hot path.
                self.entries.clear();
            }
        }
        self.entries.insert(verified.digest, verified);
    }

    /// Whether `token`'s signature failed within the last few minutes.
    pub fn signature_failed(&mut self, token: &str, now: i64) -> bool {
        let key = digest(token);
        match self.refused.get(&key) {
            Some(until) if now <= *until => true,
            Some(_) => {
                self.refused.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Remembers that `token`'s signature failed.
    pub fn remember_failed_signature(&mut self, token: &str, now: i64) {
        if self.refused.len() >= self.capacity {
            self.refused.retain(|_, until| now <= *until);
            if self.refused.len() >= self.capacity {
                self.refused.clear();
            }
        }
        self.refused
            .insert(digest(token), now.saturating_add(REFUSED_SECONDS));
    }

    /// Forgets the tokens of `issuer` whose key is no longer in its key set, and every failed
    /// signature (a new key may make one good).
    pub fn retain_keys(&mut self, issuer: &str, still_present: impl Fn(&str) -> bool) {
        self.entries
            .retain(|_, entry| entry.issuer != issuer || still_present(&entry.key_id));
        self.refused.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn is_live(&self, entry: &VerifiedToken, now: i64) -> bool {
        now <= entry.expires_at.saturating_add(self.clock_skew_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_signature_is_remembered_until_it_ages_or_keys_change() {
        let mut cache = TokenCache::new(10, 60);
        assert!(!cache.signature_failed("forged", 100));
        cache.remember_failed_signature("forged", 100);
        assert!(cache.signature_failed("forged", 100 + REFUSED_SECONDS));
        assert!(!cache.signature_failed("other", 100));
        assert!(!cache.signature_failed("forged", 101 + REFUSED_SECONDS));
        cache.remember_failed_signature("forged", 100);
        cache.retain_keys("https://issuer", |_| true);
        assert!(!cache.signature_failed("forged", 100));
    }
    use serde_json::Map;

    fn verified(token: &str, issuer: &str, kid: &str, exp: i64) -> Rc<VerifiedToken> {
        Rc::new(VerifiedToken {
            digest: digest(token),
            issuer: issuer.into(),
            subject: Some("alice".into()),
            expires_at: exp,
            key_id: kid.into(),
            claims: Map::new(),
        })
    }

    #[test]
    fn a_cached_token_is_served_until_it_expires() {
        let mut cache = TokenCache::new(10, 60);
        cache.insert(verified("t1", "i", "k", 1000), 900);
        assert!(cache.get("t1", 1000).is_some());
        assert!(cache.get("t1", 1060).is_some(), "within skew");
        assert!(cache.get("t1", 1061).is_none());
        assert!(cache.is_empty(), "an expired entry is dropped on lookup");
        assert!(cache.get("t2", 900).is_none());
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first() {
        let mut cache = TokenCache::new(2, 0);
        cache.insert(verified("old", "i", "k", 100), 50);
        cache.insert(verified("live", "i", "k", 1000), 50);
        cache.insert(verified("new", "i", "k", 1000), 500);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("live", 500).is_some());
        assert!(cache.get("new", 500).is_some());
    }

    #[test]
    fn a_cache_full_of_live_tokens_stays_bounded() {
        let mut cache = TokenCache::new(3, 0);
        for i in 0..10 {
            cache.insert(verified(&format!("t{i}"), "i", "k", 1000), 0);
            assert!(cache.len() <= 3);
        }
        assert!(cache.get("t9", 0).is_some());
    }

    #[test]
    fn tokens_of_a_removed_key_are_forgotten() {
        let mut cache = TokenCache::new(10, 0);
        cache.insert(verified("a", "i", "old", 1000), 0);
        cache.insert(verified("b", "i", "new", 1000), 0);
        cache.insert(verified("c", "other", "old", 1000), 0);
        cache.retain_keys("i", |kid| kid == "new");
        assert!(cache.get("a", 0).is_none());
        assert!(cache.get("b", 0).is_some());
        assert!(
            cache.get("c", 0).is_some(),
            "another issuer's kid is not touched"
        );
    }
}
