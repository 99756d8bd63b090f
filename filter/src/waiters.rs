//! Requests held while their issuer's keys are being fetched, or while a token for their
//! backend is being exchanged, each with a deadline.

use crate::exchange::CredentialKey;

/// What a held request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaits {
    /// The keys of an issuer (an index).
    Keys(usize),
    /// The exchange of a backend token.
    Credential(CredentialKey),
}

/// One held request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter<T> {
    pub context_id: u32,
    pub awaits: Awaits,
    pub deadline_ms: i64,
    pub request: T,
}

/// The held requests of one VM.
#[derive(Debug)]
pub struct Waiters<T> {
    held: Vec<Waiter<T>>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Self { held: Vec::new() }
    }
}

impl<T> Waiters<T> {
    pub fn hold(&mut self, waiter: Waiter<T>) {
        self.held
            .retain(|held| held.context_id != waiter.context_id);
        self.held.push(waiter);
    }

    /// Drops a request that ended (the client went away) while held.
    pub fn forget(&mut self, context_id: u32) {
        self.held.retain(|held| held.context_id != context_id);
    }

    /// Releases every request waiting for `what`, oldest first.
    pub fn release_awaiting(&mut self, what: Awaits) -> Vec<Waiter<T>> {
        self.release(|held| held.awaits == what)
    }

    /// Releases every request whose deadline has passed at `now_ms`.
    pub fn release_expired(&mut self, now_ms: i64) -> Vec<Waiter<T>> {
        self.release(|held| held.deadline_ms <= now_ms)
    }

    pub fn is_waiting_for(&self, what: Awaits) -> bool {
        self.held.iter().any(|held| held.awaits == what)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    fn release(&mut self, pick: impl Fn(&Waiter<T>) -> bool) -> Vec<Waiter<T>> {
        let (released, kept) = std::mem::take(&mut self.held).into_iter().partition(pick);
        self.held = kept;
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(context_id: u32, issuer: usize, deadline_ms: i64) -> Waiter<()> {
        Waiter {
            context_id,
            awaits: Awaits::Keys(issuer),
            deadline_ms,
            request: (),
        }
    }

    #[test]
    fn releases_by_issuer_in_arrival_order() {
        let mut waiters = Waiters::default();
        waiters.hold(waiter(1, 0, 100));
        waiters.hold(waiter(2, 1, 100));
        waiters.hold(waiter(3, 0, 100));
        let released: Vec<u32> = waiters
            .release_awaiting(Awaits::Keys(0))
            .iter()
            .map(|w| w.context_id)
            .collect();
        assert_eq!(released, [1, 3]);
        assert_eq!(waiters.len(), 1);
        assert!(waiters.is_waiting_for(Awaits::Keys(1)));
        let key = CredentialKey::new([7; 32], 0);
        waiters.hold(Waiter {
            context_id: 4,
            awaits: Awaits::Credential(key),
            deadline_ms: 100,
            request: (),
        });
        assert!(waiters
            .release_awaiting(Awaits::Keys(1))
            .iter()
            .all(|w| w.context_id == 2));
        assert_eq!(waiters.release_awaiting(Awaits::Credential(key)).len(), 1);
    }

    #[test]
    fn releases_expired_requests_only() {
        let mut waiters = Waiters::default();
        waiters.hold(waiter(1, 0, 100));
        waiters.hold(waiter(2, 0, 200));
        assert_eq!(waiters.release_expired(150).len(), 1);
        assert!(waiters.release_expired(150).is_empty());
        assert_eq!(waiters.release_expired(200).len(), 1);
    }

    #[test]
    fn a_request_that_ended_is_forgotten() {
        let mut waiters = Waiters::default();
        waiters.hold(waiter(1, 0, 100));
        waiters.forget(1);
        assert!(waiters.is_empty());
    }
}
