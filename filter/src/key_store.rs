//! Each trusted issuer's current keys, and when to fetch them again.
//!
//! The schedule is plain logic over millisecond timestamps so that it is tested on the host; the
//! proxy-wasm glue only carries out what it says (dispatch a fetch, adopt a copy another VM
//! fetched) and reports back.

use std::sync::Arc;

use crate::config::{IssuerConfig, KeySource, RemoteJwks};
use crate::jwks::KeySet;
use crate::verify::IssuerKeys;

/// Retry delays after failed fetches grow from this up to the refresh interval (capped at a minute).
const FIRST_RETRY_MS: i64 = 1_000;
const MAX_RETRY_MS: i64 = 60_000;
/// A fetch with no answer after its timeout plus this grace is considered lost.
const LOST_FETCH_GRACE_MS: i64 = 1_000;

struct IssuerState {
    issuer: String,
    remote: Option<RemoteJwks>,
    keys: Option<Arc<KeySet>>,
    /// When the keys held were fetched (by this VM or another one).
    fetched_at_ms: Option<i64>,
    in_flight_since_ms: Option<i64>,
    next_attempt_ms: i64,
    failures: u32,
    /// A refetch asked for at this time (unknown `kid`, or requests waiting for first keys).
    refetch_wanted_at_ms: Option<i64>,
    last_unknown_kid_refetch_ms: Option<i64>,
}

impl IssuerState {
    /// The configured refresh interval (0 for inline keys, which are never fetched).
    fn refresh_ms(&self) -> i64 {
        self.remote
            .as_ref()
            .map_or(0, |r| i64::from(r.refresh_seconds) * 1000)
    }
}

/// What the filter holds of every configured issuer's keys.
pub struct KeyStore {
    issuers: Vec<IssuerState>,
}

impl KeyStore {
    pub fn new(issuers: &[IssuerConfig]) -> Self {
        let issuers = issuers
            .iter()
            .map(|config| {
                let (remote, keys) = match &config.keys {
                    KeySource::Inline(keys) => (None, Some(Arc::clone(keys))),
                    KeySource::Remote(remote) => (Some(remote.clone()), None),
                    KeySource::Envoy => (None, None),
                };
                IssuerState {
                    issuer: config.issuer.clone(),
                    remote,
                    keys,
                    fetched_at_ms: None,
                    in_flight_since_ms: None,
                    next_attempt_ms: 0,
                    failures: 0,
                    refetch_wanted_at_ms: None,
                    last_unknown_kid_refetch_ms: None,
                }
            })
            .collect();
        Self { issuers }
    }

    pub fn len(&self) -> usize {
        self.issuers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The index of a configured issuer.
    pub fn index_of(&self, issuer: &str) -> Option<usize> {
        self.issuers.iter().position(|state| state.issuer == issuer)
    }

    pub fn issuer(&self, index: usize) -> Option<&str> {
        self.issuers.get(index).map(|state| state.issuer.as_str())
    }

    pub fn remote(&self, index: usize) -> Option<&RemoteJwks> {
        self.issuers
            .get(index)
            .and_then(|state| state.remote.as_ref())
    }

    pub fn keys(&self, index: usize) -> Option<&Arc<KeySet>> {
        self.issuers
            .get(index)
            .and_then(|state| state.keys.as_ref())
    }

    pub fn fetched_at_ms(&self, index: usize) -> Option<i64> {
        self.issuers
            .get(index)
            .and_then(|state| state.fetched_at_ms)
    }

    /// The keys of `issuer`, in the form token verification asks for.
    pub fn issuer_keys(&self, issuer: &str) -> IssuerKeys<'_> {
        match self.issuers.iter().find(|state| state.issuer == issuer) {
            None => IssuerKeys::Untrusted,
            Some(IssuerState { keys: None, .. }) => IssuerKeys::NotLoaded,
            Some(IssuerState {
                keys: Some(keys), ..
            }) => IssuerKeys::Loaded(keys),
        }
    }

    /// A token named a `kid` the issuer's keys lack: asks for a refetch unless one was asked
    /// for within the cooldown. Returns whether the caller should wait for it.
    pub fn refetch_for_unknown_kid(&mut self, index: usize, now_ms: i64) -> bool {
        let Some(state) = self.issuers.get_mut(index) else {
            return false;
        };
        let Some(remote) = &state.remote else {
            return false;
        };
        let cooldown_ms = i64::from(remote.unknown_kid_cooldown_seconds) * 1000;
        if state
            .last_unknown_kid_refetch_ms
            .is_some_and(|last| now_ms - last < cooldown_ms)
        {
            return false;
        }
        state.last_unknown_kid_refetch_ms = Some(now_ms);
        state.refetch_wanted_at_ms.get_or_insert(now_ms);
        true
    }

    /// Requests are waiting for an issuer that has no keys yet: fetch as soon as possible.
    pub fn want_first_keys(&mut self, index: usize, now_ms: i64) {
        if let Some(state) = self.issuers.get_mut(index) {
            if state.keys.is_none() && state.remote.is_some() {
                state.refetch_wanted_at_ms.get_or_insert(now_ms);
            }
        }
    }

    /// Whether a copy fetched at `shared_fetched_at_ms` (by any VM) is newer than what is held.
    pub fn is_newer(&self, index: usize, shared_fetched_at_ms: i64) -> bool {
        self.issuers.get(index).is_some_and(|state| {
            state.remote.is_some()
                && state
                    .fetched_at_ms
                    .is_none_or(|held| shared_fetched_at_ms > held)
        })
    }

    /// Whether this VM should fetch the issuer's JWKS now.
    pub fn should_fetch(&self, index: usize, now_ms: i64) -> bool {
        let Some(state) = self.issuers.get(index) else {
            return false;
        };
        let Some(remote) = &state.remote else {
            return false;
        };
        if let Some(since) = state.in_flight_since_ms {
            if now_ms - since < i64::from(remote.timeout_ms) + LOST_FETCH_GRACE_MS {
                return false;
            }
        }
        let wanted = state
            .refetch_wanted_at_ms
            .is_some_and(|asked| state.fetched_at_ms.is_none_or(|held| held < asked));
        wanted || now_ms >= state.next_attempt_ms
    }

    pub fn fetch_started(&mut self, index: usize, now_ms: i64) {
        if let Some(state) = self.issuers.get_mut(index) {
            state.in_flight_since_ms = Some(now_ms);
        }
    }

    /// Takes keys fetched at `fetched_at_ms`, by this VM or another one.
    pub fn keys_arrived(&mut self, index: usize, keys: Arc<KeySet>, fetched_at_ms: i64) {
        let Some(state) = self.issuers.get_mut(index) else {
            return;
        };
        let refresh_ms = state.refresh_ms();
        state.keys = Some(keys);
        state.fetched_at_ms = Some(fetched_at_ms);
        state.next_attempt_ms = state.next_attempt_ms.max(fetched_at_ms + refresh_ms);
        state.failures = 0;
        if state
            .refetch_wanted_at_ms
            .is_some_and(|asked| fetched_at_ms >= asked)
        {
            state.refetch_wanted_at_ms = None;
        }
    }

    /// This VM's fetch completed (successfully or not); the in-flight mark goes.
    pub fn fetch_finished(&mut self, index: usize) {
        if let Some(state) = self.issuers.get_mut(index) {
            state.in_flight_since_ms = None;
        }
    }

    /// The fetch failed: keep the last good keys and retry with a growing delay.
    pub fn fetch_failed(&mut self, index: usize, now_ms: i64) {
        let Some(state) = self.issuers.get_mut(index) else {
            return;
        };
        let refresh_ms = state.refresh_ms();
        state.in_flight_since_ms = None;
        state.failures = state.failures.saturating_add(1);
        let backoff = FIRST_RETRY_MS.saturating_mul(1 << state.failures.min(10).saturating_sub(1));
        state.next_attempt_ms = now_ms
            + backoff
                .min(refresh_ms.max(FIRST_RETRY_MS))
                .min(MAX_RETRY_MS);
        // A refetch for an unknown kid is answered by the failure; waiting requests decide now.
        if state.keys.is_some() {
            state.refetch_wanted_at_ms = None;
        }
    }
}

/// The JWKS copy that VMs share: when it was fetched, then the document as the server sent it.
pub fn encode_shared(fetched_at_ms: i64, document: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + document.len());
    value.extend_from_slice(&fetched_at_ms.to_be_bytes());
    value.extend_from_slice(document);
    value
}

/// Splits a shared copy into its fetch time and document; `None` for a value of another shape.
pub fn decode_shared(value: &[u8]) -> Option<(i64, &[u8])> {
    let (stamp, document) = value.split_at_checked(8)?;
    let stamp: [u8; 8] = stamp.try_into().ok()?;
    Some((i64::from_be_bytes(stamp), document))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_keys;
    use serde_json::json;

    fn remote_store(refresh_seconds: u32) -> KeyStore {
        KeyStore::new(&[IssuerConfig {
            issuer: "https://idp".into(),
            keys: KeySource::Remote(RemoteJwks {
                cluster: "idp".into(),
                path: "/jwks".into(),
                authority: "idp".into(),
                refresh_seconds,
                timeout_ms: 2_000,
                unknown_kid_cooldown_seconds: 30,
            }),
        }])
    }

    fn keys() -> Arc<KeySet> {
        Arc::new(KeySet::from_value(&json!({"keys": [test_keys::p256().public_jwk("k")]})).unwrap())
    }

    #[test]
    fn a_remote_issuer_is_fetched_at_once_then_every_refresh_interval() {
        let mut store = remote_store(60);
        assert!(matches!(
            store.issuer_keys("https://idp"),
            IssuerKeys::NotLoaded
        ));
        assert!(store.should_fetch(0, 0));
        store.fetch_started(0, 0);
        assert!(!store.should_fetch(0, 100), "one fetch at a time");
        store.keys_arrived(0, keys(), 100);
        store.fetch_finished(0);
        assert!(matches!(
            store.issuer_keys("https://idp"),
            IssuerKeys::Loaded(_)
        ));
        assert!(!store.should_fetch(0, 59_000));
        assert!(store.should_fetch(0, 60_100));
    }

    #[test]
    fn a_failed_refresh_keeps_the_last_good_keys_and_backs_off() {
        let mut store = remote_store(300);
        store.keys_arrived(0, keys(), 0);
        store.fetch_started(0, 300_000);
        store.fetch_failed(0, 300_000);
        assert!(store.keys(0).is_some(), "last good keys kept");
        assert!(!store.should_fetch(0, 300_500));
        assert!(store.should_fetch(0, 301_000), "first retry after a second");
        store.fetch_started(0, 301_000);
        store.fetch_failed(0, 301_000);
        assert!(!store.should_fetch(0, 302_500));
        assert!(store.should_fetch(0, 303_000), "then two seconds");
    }

    #[test]
    fn retries_never_wait_longer_than_a_minute() {
        let mut store = remote_store(3600);
        for _ in 0..20 {
            store.fetch_failed(0, 0);
        }
        assert!(store.should_fetch(0, 60_000));
    }

    #[test]
    fn unknown_kid_refetches_at_most_once_per_cooldown() {
        let mut store = remote_store(300);
        store.keys_arrived(0, keys(), 0);
        assert!(store.refetch_for_unknown_kid(0, 10_000));
        assert!(
            store.should_fetch(0, 10_000),
            "refetch wanted before the refresh is due"
        );
        assert!(
            !store.refetch_for_unknown_kid(0, 20_000),
            "within the cooldown"
        );
        assert!(store.refetch_for_unknown_kid(0, 40_000));
    }

    #[test]
    fn a_lost_fetch_does_not_block_forever() {
        let mut store = remote_store(300);
        store.fetch_started(0, 0);
        assert!(!store.should_fetch(0, 2_500));
        assert!(store.should_fetch(0, 3_001));
    }

    #[test]
    fn another_vms_newer_copy_is_adopted_and_satisfies_a_refetch() {
        let mut store = remote_store(300);
        store.keys_arrived(0, keys(), 1_000);
        assert!(!store.is_newer(0, 1_000));
        assert!(store.is_newer(0, 2_000));
        store.refetch_for_unknown_kid(0, 5_000);
        store.keys_arrived(0, keys(), 6_000);
        assert!(!store.should_fetch(0, 6_000));
    }

    #[test]
    fn inline_keys_are_never_fetched() {
        let store = KeyStore::new(&[IssuerConfig {
            issuer: "https://i".into(),
            keys: KeySource::Inline(keys()),
        }]);
        assert!(matches!(
            store.issuer_keys("https://i"),
            IssuerKeys::Loaded(_)
        ));
        assert!(!store.should_fetch(0, 0));
        assert!(matches!(
            store.issuer_keys("https://other"),
            IssuerKeys::Untrusted
        ));
    }

    #[test]
    fn shared_copies_round_trip() {
        let value = encode_shared(1_234, b"{\"keys\":[]}");
        assert_eq!(decode_shared(&value), Some((1_234, &b"{\"keys\":[]}"[..])));
        assert_eq!(decode_shared(b"short"), None);
    }
}
