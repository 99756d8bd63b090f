//! Keeping the database small: what has expired is deleted on a schedule. Without it every table
//! only grows (every SDK connection may register a client, every login leaves a request, a code,
//! an upstream login, a chain of rotated refresh tokens), and so do backups and query times.

use std::future::Future;
use std::time::Duration;

use super::StoreError;

/// How long a dead credential is kept after it expired or its family was revoked.
///
/// A redeemed code or a rotated refresh token is the evidence of a replay: presented again, it
/// revokes its whole family. Keeping it a day past its death lets a replay that arrives late
/// still revoke the family; after that it can only be answered `invalid_grant` anyway.
pub const RETENTION_SECONDS: i64 = 24 * 3600;

/// The instants before which rows are dead, computed once per purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeCutoffs {
    /// Requests and upstream logins expire at once: they are single-use and short-lived.
    pub now: i64,
    /// Codes, refresh-token families and revocations dead before this are deleted.
    pub dead_before: i64,
    /// Registered clients never used and created before this are deleted.
    pub unused_clients_before: i64,
}

impl PurgeCutoffs {
    pub fn at(now: i64, unused_client_seconds: u64) -> Self {
        let unused = i64::try_from(unused_client_seconds).unwrap_or(i64::MAX);
        Self {
            now,
            dead_before: now.saturating_sub(RETENTION_SECONDS),
            unused_clients_before: now.saturating_sub(unused),
        }
    }
}

/// How precisely a client's last use is recorded: a lookup writes the mark only when the last
/// one is older than this, so an established client costs a write an hour rather than one per
/// token request, and `admin clients list` can still tell which clients are in use.
pub const USE_MARK_SECONDS: i64 = 3600;

/// Whether a lookup, at `now`, of a registered client last marked used at `last_used_at` must
/// mark it again: never marked (the purge of unused registrations would take it), or marked
/// over `USE_MARK_SECONDS` ago.
pub fn needs_use_mark(last_used_at: Option<i64>, now: i64) -> bool {
    last_used_at.is_none_or(|at| now.saturating_sub(at) >= USE_MARK_SECONDS)
}

/// Rows deleted by one purge, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    pub auth_requests: u64,
    pub upstream_logins: u64,
    /// ID-JAGs remembered against replay, once expired.
    pub used_assertions: u64,
    pub codes: u64,
    pub refresh_tokens: u64,
    pub upstream_tokens: u64,
    pub revoked_families: u64,
    pub clients: u64,
    pub consents: u64,
}

impl Purged {
    pub fn total(&self) -> u64 {
        self.auth_requests
            + self.upstream_logins
            + self.used_assertions
            + self.codes
            + self.refresh_tokens
            + self.upstream_tokens
            + self.revoked_families
            + self.clients
            + self.consents
    }
}

/// The store's housekeeping statements (implemented with the rest of the SQL in `sql.rs`).
pub trait Housekeeping {
    /// Deletes what is dead at `cutoffs`: expired requests, upstream logins and used-assertion
    /// records (an expired assertion is refused for its expiry already); codes expired
    /// before `dead_before`; refresh tokens of families whose newest token expired, or that were
    /// revoked, before `dead_before`; upstream tokens of revoked families and of families with
    /// no refresh token left; revocations with nothing left to revoke; clients never used; and
    /// consents given to a client that is no longer registered (deleted as unused, or revoked).
    /// A consent to a metadata-document client is kept: such a client is never registered.
    fn purge(
        &self,
        cutoffs: PurgeCutoffs,
    ) -> impl Future<Output = Result<Purged, StoreError>> + Send;

    /// Records that a registered client was used at `now`.
    fn client_used(
        &self,
        client_id: &str,
        now: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Runs a purge every `purge_interval_seconds` (none when it is 0), logging what it deleted.
pub fn spawn<S: super::Store>(
    store: S,
    purge_interval_seconds: u64,
    unused_client_seconds: u64,
    clock: impl crate::oauth::Clock + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    if purge_interval_seconds == 0 {
        tracing::info!("purge_interval_seconds is 0: expired rows are never deleted");
        return None;
    }
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(purge_interval_seconds));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let cutoffs = PurgeCutoffs::at(clock.now(), unused_client_seconds);
            match store.purge(cutoffs).await {
                Ok(purged) => tracing::info!(
                    total = purged.total(),
                    auth_requests = purged.auth_requests,
                    upstream_logins = purged.upstream_logins,
                    used_assertions = purged.used_assertions,
                    codes = purged.codes,
                    refresh_tokens = purged.refresh_tokens,
                    upstream_tokens = purged.upstream_tokens,
                    revoked_families = purged.revoked_families,
                    clients = purged.clients,
                    consents = purged.consents,
                    "purged expired rows"
                ),
                Err(err) => {
                    tracing::warn!(error = %err, "purge failed; retried at the next interval")
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::grant::{Grant, User};
    use crate::store::{PendingRequest, SqliteStore, Store, StoredClient, UpstreamLogin};
    use serde_json::json;

    const NOW: i64 = 10_000_000;
    const WEEK: u64 = 7 * 24 * 3600;

    fn grant() -> Grant {
        Grant {
            client_id: "c1".into(),
            resource: "https://mcp/mcp".into(),
            scope: "mcp:tools offline_access".into(),
            user: User {
                subject: "dev:alice".into(),
                email: None,
                name: None,
                groups: vec![],
                roles: vec![],
            },
            redirect_uri: "http://127.0.0.1/cb".into(),
            code_challenge: "x".into(),
        }
    }

    fn request() -> PendingRequest {
        PendingRequest {
            client_id: "c1".into(),
            client_name: Some("c".into()),
            redirect_uri: "http://127.0.0.1/cb".into(),
            state: None,
            code_challenge: "x".into(),
            resource: "https://mcp/mcp".into(),
            scope: "mcp:tools".into(),
        }
    }

    fn client(id: &str, created_at: i64) -> StoredClient {
        StoredClient {
            client_id: id.into(),
            secret_sha256: None,
            metadata: json!({"redirect_uris": ["http://127.0.0.1/cb"]}),
            created_at,
            last_used_at: None,
        }
    }

    fn login() -> UpstreamLogin {
        UpstreamLogin {
            request_id: "r".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
        }
    }

    #[test]
    fn cutoffs_keep_dead_credentials_a_day_and_unused_clients_as_configured() {
        let cutoffs = PurgeCutoffs::at(NOW, WEEK);
        assert_eq!(cutoffs.now, NOW);
        assert_eq!(cutoffs.dead_before, NOW - 24 * 3600);
        assert_eq!(cutoffs.unused_clients_before, NOW - WEEK as i64);
        assert_eq!(
            PurgeCutoffs::at(0, u64::MAX).unused_clients_before,
            -i64::MAX
        );
    }

    #[test]
    fn a_client_is_marked_used_when_never_marked_or_an_hour_after_its_last_mark() {
        assert!(needs_use_mark(None, NOW));
        assert!(!needs_use_mark(Some(NOW - 10), NOW));
        assert!(!needs_use_mark(Some(NOW - USE_MARK_SECONDS + 1), NOW));
        assert!(needs_use_mark(Some(NOW - USE_MARK_SECONDS), NOW));
        assert!(
            !needs_use_mark(Some(NOW + 5), NOW),
            "a clock that went back"
        );
    }

    #[tokio::test]
    async fn each_table_loses_its_dead_rows_and_keeps_the_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite://{}/auth.db", dir.path().display()))
            .await
            .unwrap();
        let day = 24 * 3600;
        // Requests and upstream logins: expired ones go at once.
        store
            .save_request("old", "b", &request(), NOW - 1)
            .await
            .unwrap();
        store
            .save_request("live", "b", &request(), NOW + 600)
            .await
            .unwrap();
        store
            .save_upstream_login("old", &login(), NOW)
            .await
            .unwrap();
        store
            .save_upstream_login("live", &login(), NOW + 600)
            .await
            .unwrap();
        // Used assertions: remembered until they expire (then refused for their expiry).
        store.use_assertion("old", NOW, NOW - 300).await.unwrap();
        store
            .use_assertion("live", NOW + 60, NOW - 10)
            .await
            .unwrap();
        // Codes: kept a day past expiry (replay evidence), then deleted.
        store
            .save_code("old", &grant(), "f-code", NOW - day - 1)
            .await
            .unwrap();
        store
            .save_code("recent", &grant(), "f-code", NOW - 10)
            .await
            .unwrap();
        // A family whose newest token died over a day ago goes whole; a live family keeps its
        // rotated (used) tokens, the evidence of a replay.
        store
            .save_refresh("dead-1", &grant(), "f-dead", NOW - 2 * day, NOW)
            .await
            .unwrap();
        store
            .save_refresh("dead-2", &grant(), "f-dead", NOW - day - 1, NOW)
            .await
            .unwrap();
        store
            .save_refresh("live-1", &grant(), "f-live", NOW - 2 * day, NOW)
            .await
            .unwrap();
        store
            .save_refresh("live-2", &grant(), "f-live", NOW + day, NOW)
            .await
            .unwrap();
        // A family revoked over a day ago goes, with its upstream session; one revoked just now
        // keeps its tokens (a replay is still recognised) but loses its upstream session.
        store
            .save_refresh("rev-1", &grant(), "f-revoked", NOW + day, NOW)
            .await
            .unwrap();
        store
            .revoke_family("f-revoked", "reuse", NOW - day - 1)
            .await
            .unwrap();
        store
            .save_refresh("fresh-rev", &grant(), "f-fresh-revoked", NOW + day, NOW)
            .await
            .unwrap();
        store
            .revoke_family("f-fresh-revoked", "revoked", NOW - 5)
            .await
            .unwrap();
        for family in ["f-dead", "f-live", "f-revoked", "f-fresh-revoked", "f-gone"] {
            store
                .save_upstream_tokens(family, b"sealed", NOW - 2 * day)
                .await
                .unwrap();
        }
        // Clients: never used and older than the limit go; used or young ones stay.
        store
            .save_client(&client("unused-old", NOW - WEEK as i64 - 1))
            .await
            .unwrap();
        store
            .save_client(&client("unused-young", NOW - 10))
            .await
            .unwrap();
        store
            .save_client(&client("used-old", NOW - WEEK as i64 - 1))
            .await
            .unwrap();
        store.client_used("used-old", NOW - 100).await.unwrap();
        // Consents: one to a client still registered stays, one to a client gone goes (the
        // unused one purged in this very run included), one to a metadata-document client stays.
        for (client_id, subject) in [
            ("used-old", "dev:alice"),
            ("deleted-long-ago", "dev:alice"),
            ("unused-old", "dev:bob"),
            ("https://app.example.com/client.json", "dev:alice"),
        ] {
            store
                .save_consent(subject, client_id, "https://mcp/mcp", "mcp:tools", NOW - 50)
                .await
                .unwrap();
        }

        let purged = store.purge(PurgeCutoffs::at(NOW, WEEK)).await.unwrap();
        assert_eq!(
            purged,
            Purged {
                auth_requests: 1,
                upstream_logins: 1,
                used_assertions: 1,
                codes: 1,
                refresh_tokens: 3,
                upstream_tokens: 4,
                revoked_families: 1,
                clients: 1,
                consents: 2,
            }
        );

        assert!(store.request("live", NOW).await.unwrap().is_some());
        assert!(store
            .take_upstream_login("live", NOW)
            .await
            .unwrap()
            .is_some());
        assert!(matches!(
            store.redeem_code("recent", NOW - 20).await.unwrap(),
            crate::store::Redeemed::Fresh { .. }
        ));
        assert!(store.refresh_family("live-1").await.unwrap().is_some());
        assert!(store.refresh_family("fresh-rev").await.unwrap().is_some());
        assert!(store.refresh_family("dead-2").await.unwrap().is_none());
        assert!(store.refresh_family("rev-1").await.unwrap().is_none());
        assert!(store.upstream_tokens("f-live").await.unwrap().is_some());
        assert!(store
            .upstream_tokens("f-fresh-revoked")
            .await
            .unwrap()
            .is_none());
        assert!(store.client("unused-old").await.unwrap().is_none());
        assert!(store.client("unused-young").await.unwrap().is_some());
        assert!(store.client("used-old").await.unwrap().is_some());
        assert!(
            !store.use_assertion("live", NOW + 60, NOW).await.unwrap(),
            "a live assertion is still remembered"
        );
        for (subject, client_id, kept) in [
            ("dev:alice", "used-old", true),
            ("dev:alice", "deleted-long-ago", false),
            ("dev:bob", "unused-old", false),
            ("dev:alice", "https://app.example.com/client.json", true),
        ] {
            let consent = store
                .consent(subject, client_id, "https://mcp/mcp")
                .await
                .unwrap();
            assert_eq!(consent.is_some(), kept, "{client_id}");
        }

        let again = store.purge(PurgeCutoffs::at(NOW, WEEK)).await.unwrap();
        assert_eq!(again.total(), 0, "a purge deletes only what is dead");
    }
}
