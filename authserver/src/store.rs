//! Durable state behind a trait: SQLite (one file, WAL) by default, so that a restart loses no
//! registered client; PostgreSQL for several replicas sharing one database.

use std::future::Future;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::oauth::grant::Redeemed;
use crate::oauth::grant::{Grant, User};
use crate::oauth::token::StoredRefresh;

pub mod admin;
pub mod housekeeping;
mod postgres;
mod sql;
mod sqlite;

pub use admin::{Administration, ClientState, ListedClient, LiveFamily, Owner, StoredConsent};
pub use housekeeping::{Housekeeping, PurgeCutoffs, Purged};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database `{url}`: {message}")]
    Open { url: String, message: String },
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored client metadata is not JSON: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// A registered client as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredClient {
    pub client_id: String,
    /// SHA-256 (hex) of the secret of a confidential client.
    pub secret_sha256: Option<String>,
    pub metadata: Value,
    pub created_at: i64,
    /// When it was last used for a sign-in or a token, to the hour (see `needs_use_mark`);
    /// `None` if never.
    pub last_used_at: Option<i64>,
}

/// An authorization request between `/oauth/authorize` and the issued code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    pub client_id: String,
    /// The name the client chose for itself, if any.
    #[serde(default)]
    pub client_name: Option<String>,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub resource: String,
    pub scope: String,
}

/// A pending request as stored: whose browser started it and who signed in, once they have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    pub browser_id: String,
    pub request: PendingRequest,
    pub signed_in: Option<SignedIn>,
}

/// Who signed in for a pending request, kept until they answer the consent page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedIn {
    pub user: User,
    /// The upstream session (sealed, base64), stored with the grant family once a code is issued.
    pub sealed_upstream: Option<String>,
}

type Io<T> = Result<T, StoreError>;

/// A refresh token's rotation: its successor, stored as the old one is claimed.
#[derive(Debug, Clone)]
pub struct Rotation<'a> {
    pub successor_sha256: &'a str,
    /// The successor sealed under a key derived from the old token (for a retry's answer).
    pub successor_sealed: &'a [u8],
    pub grant: &'a Grant,
    pub family_id: &'a str,
    pub expires_at: i64,
    pub family_issued_at: i64,
    /// The family's upstream session as the upstream refresh left it, sealed.
    pub upstream_sealed: Option<&'a [u8]>,
}

/// An upstream login in flight: which request it serves and the secrets its callback needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLogin {
    pub request_id: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// What the server keeps across restarts.
pub trait Store: Housekeeping + Administration + Clone + Send + Sync + 'static {
    fn save_client(&self, client: &StoredClient) -> impl Future<Output = Io<()>> + Send;
    fn client(&self, client_id: &str) -> impl Future<Output = Io<Option<StoredClient>>> + Send;
    fn save_request(
        &self,
        id: &str,
        browser_id: &str,
        request: &PendingRequest,
        expires_at: i64,
    ) -> impl Future<Output = Io<()>> + Send;
    fn request(&self, id: &str, now: i64)
        -> impl Future<Output = Io<Option<StoredRequest>>> + Send;
    /// Records who signed in for a pending request (login comes before consent).
    fn save_sign_in(&self, id: &str, signed_in: &SignedIn) -> impl Future<Output = Io<()>> + Send;
    fn delete_request(&self, id: &str) -> impl Future<Output = Io<()>> + Send;
    /// The scope `subject` approved for `client_id` at `resource`, if they did.
    fn consent(
        &self,
        subject: &str,
        client_id: &str,
        resource: &str,
    ) -> impl Future<Output = Io<Option<String>>> + Send;
    fn save_consent(
        &self,
        subject: &str,
        client_id: &str,
        resource: &str,
        scope: &str,
        now: i64,
    ) -> impl Future<Output = Io<()>> + Send;
    fn save_code(
        &self,
        code_sha256: &str,
        grant: &Grant,
        family_id: &str,
        expires_at: i64,
    ) -> impl Future<Output = Io<()>> + Send;
    fn redeem_code(&self, code_sha256: &str, now: i64)
        -> impl Future<Output = Io<Redeemed>> + Send;
    /// Stores the first refresh token of a family (issued with its code's exchange).
    fn save_refresh(
        &self,
        token_sha256: &str,
        grant: &Grant,
        family_id: &str,
        expires_at: i64,
        family_issued_at: i64,
    ) -> impl Future<Output = Io<()>> + Send;
    /// A refresh token as stored, used or not, with its family's state and its successor: what
    /// a refresh is decided on, before anything is written.
    fn find_refresh(
        &self,
        token_sha256: &str,
        now: i64,
    ) -> impl Future<Output = Io<Option<StoredRefresh>>> + Send;
    /// Takes the lease on an unused refresh token until `until` (unless another request holds
    /// a live one): only the holder asks the identity provider with the family's upstream
    /// session. `false` when the token is leased by another request, used, or unknown.
    fn lease_refresh(
        &self,
        token_sha256: &str,
        now: i64,
        until: i64,
    ) -> impl Future<Output = Io<bool>> + Send;
    /// Gives a lease back (the provider could not be asked): the next request need not wait.
    fn release_refresh_lease(&self, token_sha256: &str) -> impl Future<Output = Io<()>> + Send;
    /// Claims `old_sha256` and stores its successor in one transaction, with the family's new
    /// upstream session if there is one; `false` when another request claimed it first (or it
    /// died meanwhile), in which case nothing is written.
    fn rotate_refresh(
        &self,
        old_sha256: &str,
        rotation: &Rotation<'_>,
        now: i64,
    ) -> impl Future<Output = Io<bool>> + Send;
    /// The family and client of a refresh token, used or not (for RFC 7009 revocation).
    fn refresh_family(
        &self,
        token_sha256: &str,
    ) -> impl Future<Output = Io<Option<(String, String)>>> + Send;
    fn revoke_family(
        &self,
        family_id: &str,
        reason: &str,
        now: i64,
    ) -> impl Future<Output = Io<()>> + Send;
    fn save_upstream_login(
        &self,
        state_sha256: &str,
        login: &UpstreamLogin,
        expires_at: i64,
    ) -> impl Future<Output = Io<()>> + Send;
    /// Takes (and deletes) an upstream login: a state is good for one callback only.
    fn take_upstream_login(
        &self,
        state_sha256: &str,
        now: i64,
    ) -> impl Future<Output = Io<Option<UpstreamLogin>>> + Send;
    fn save_upstream_tokens(
        &self,
        family_id: &str,
        sealed: &[u8],
        now: i64,
    ) -> impl Future<Output = Io<()>> + Send;
    fn upstream_tokens(&self, family_id: &str) -> impl Future<Output = Io<Option<Vec<u8>>>> + Send;
    /// Records an assertion (an ID-JAG, by `key_sha256`) as used until `expires_at`, in one
    /// statement, so two requests or two replicas cannot both use it: `false` when it was used
    /// already (and has not expired by `now`).
    fn use_assertion(
        &self,
        key_sha256: &str,
        expires_at: i64,
        now: i64,
    ) -> impl Future<Output = Io<bool>> + Send;
    /// Whether a grant family was revoked: an access token of it is refused for exchange.
    fn family_revoked(&self, family_id: &str) -> impl Future<Output = Io<bool>> + Send;
    /// Takes the lease on a family's upstream session until `until` (unless another request
    /// holds a live one): only the holder asks the identity provider with its refresh token for
    /// a backend's token. `false` when another holds it, or no session is kept.
    fn lease_upstream(
        &self,
        family_id: &str,
        now: i64,
        until: i64,
    ) -> impl Future<Output = Io<bool>> + Send;
    /// Stores the family's upstream session as the provider left it, and gives the lease back.
    fn save_leased_upstream(
        &self,
        family_id: &str,
        sealed: &[u8],
        now: i64,
    ) -> impl Future<Output = Io<()>> + Send;
    /// Gives a lease back (the provider could not be asked): the next request need not wait.
    fn release_upstream_lease(&self, family_id: &str) -> impl Future<Output = Io<()>> + Send;
    /// Stores a client declared in the configuration, replacing what was stored under its ID;
    /// it counts as used, so the purge of unused registrations spares it.
    fn put_client(&self, client: &StoredClient) -> impl Future<Output = Io<()>> + Send;
    fn ping(&self) -> impl Future<Output = Io<()>> + Send;
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> Result<Self, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            _ => Err(StoreError::Open {
                url: redacted(url),
                message: "the database URL must start with sqlite: or postgres://".into(),
            }),
        }
    }
}

/// A database URL fit for a log line or an error: the password, if any, replaced.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grant() -> Grant {
        Grant {
            client_id: "c1".into(),
            resource: "https://mcp/mcp".into(),
            scope: "mcp:tools offline_access".into(),
            user: crate::oauth::grant::User {
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

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/auth.db", dir.path().display());
        let store = SqliteStore::open(&url).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_code_is_redeemed_once_then_reported_as_replayed() {
        let (_dir, store) = store().await;
        store.save_code("h1", &grant(), "fam", 1000).await.unwrap();
        assert_eq!(
            store.redeem_code("h1", 10).await.unwrap(),
            Redeemed::Fresh {
                grant: Box::new(grant()),
                family_id: "fam".into()
            }
        );
        assert_eq!(
            store.redeem_code("h1", 10).await.unwrap(),
            Redeemed::Replayed {
                family_id: "fam".into()
            }
        );
        assert_eq!(
            store.redeem_code("nope", 10).await.unwrap(),
            Redeemed::Invalid
        );
        store.save_code("h2", &grant(), "fam2", 1000).await.unwrap();
        assert_eq!(
            store.redeem_code("h2", 1000).await.unwrap(),
            Redeemed::Invalid,
            "expired"
        );
    }

    #[tokio::test]
    async fn a_revoked_family_redeems_nothing() {
        let (_dir, store) = store().await;
        store
            .save_refresh("r1", &grant(), "fam", 1000, 1)
            .await
            .unwrap();
        store
            .save_refresh("r2", &grant(), "fam", 1000, 1)
            .await
            .unwrap();
        store.revoke_family("fam", "reuse", 5).await.unwrap();
        assert!(
            store
                .find_refresh("r1", 10)
                .await
                .unwrap()
                .unwrap()
                .family_revoked
        );
        assert!(!store
            .rotate_refresh("r1", &rotation("s1", None), 10)
            .await
            .unwrap());
        assert_eq!(
            store.refresh_family("r2").await.unwrap(),
            Some(("fam".into(), "c1".into()))
        );
    }

    fn rotation<'a>(successor: &'a str, upstream: Option<&'a [u8]>) -> Rotation<'a> {
        static GRANT: std::sync::OnceLock<Grant> = std::sync::OnceLock::new();
        Rotation {
            successor_sha256: successor,
            successor_sealed: b"sealed",
            grant: GRANT.get_or_init(grant),
            family_id: "fam",
            expires_at: 2000,
            family_issued_at: 1,
            upstream_sealed: upstream,
        }
    }

    #[tokio::test]
    async fn a_rotation_claims_once_and_stores_the_successor_with_it() {
        let (_dir, store) = store().await;
        store
            .save_refresh("r", &grant(), "fam", 1000, 1)
            .await
            .unwrap();
        let before = store.find_refresh("r", 10).await.unwrap().unwrap();
        assert_eq!((before.used_at, before.family_issued_at), (None, 1));
        assert!(store
            .rotate_refresh("r", &rotation("s", Some(b"upstream")), 10)
            .await
            .unwrap());
        assert!(
            !store
                .rotate_refresh("r", &rotation("s2", None), 11)
                .await
                .unwrap(),
            "the second claim loses and writes nothing"
        );
        assert!(store.find_refresh("s2", 11).await.unwrap().is_none());
        let old = store.find_refresh("r", 12).await.unwrap().unwrap();
        assert_eq!(old.used_at, Some(10));
        let successor = old.successor.unwrap();
        assert_eq!(
            (successor.sealed.as_slice(), successor.live),
            (&b"sealed"[..], true)
        );
        let new = store.find_refresh("s", 12).await.unwrap().unwrap();
        assert_eq!(
            (new.expires_at, new.family_issued_at),
            (2000, 1),
            "the family's start carried"
        );
        assert_eq!(
            store.upstream_tokens("fam").await.unwrap(),
            Some(b"upstream".to_vec())
        );
        store
            .rotate_refresh("s", &rotation("t", None), 13)
            .await
            .unwrap();
        let old = store.find_refresh("r", 14).await.unwrap().unwrap();
        assert!(!old.successor.unwrap().live, "its successor was used");
    }

    #[tokio::test]
    async fn one_request_at_a_time_holds_a_sign_ins_upstream_session() {
        let (_dir, store) = store().await;
        assert!(
            !store.lease_upstream("fam", 10, 40).await.unwrap(),
            "no session kept, nothing to lease"
        );
        store.save_upstream_tokens("fam", b"v1", 1).await.unwrap();
        assert!(store.lease_upstream("fam", 10, 40).await.unwrap());
        assert!(
            !store.lease_upstream("fam", 11, 41).await.unwrap(),
            "held by the first"
        );
        store.save_leased_upstream("fam", b"v2", 12).await.unwrap();
        assert_eq!(
            store.upstream_tokens("fam").await.unwrap(),
            Some(b"v2".to_vec())
        );
        assert!(
            store.lease_upstream("fam", 13, 43).await.unwrap(),
            "saving gave it back"
        );
        store.release_upstream_lease("fam").await.unwrap();
        assert!(store.lease_upstream("fam", 14, 44).await.unwrap());
        assert!(
            store.lease_upstream("fam", 44, 74).await.unwrap(),
            "an abandoned lease expires"
        );
    }

    #[tokio::test]
    async fn a_revoked_family_is_known_as_such() {
        let (_dir, store) = store().await;
        assert!(!store.family_revoked("fam").await.unwrap());
        store.revoke_family("fam", "reuse", 5).await.unwrap();
        assert!(store.family_revoked("fam").await.unwrap());
    }

    #[tokio::test]
    async fn a_declared_client_replaces_its_stored_self_and_is_never_purged_as_unused() {
        use crate::store::housekeeping::{Housekeeping, PurgeCutoffs};
        let (_dir, store) = store().await;
        let gateway = |secret: &str, at: i64| StoredClient {
            client_id: "mesh-gateway".into(),
            secret_sha256: Some(secret.into()),
            metadata: json!({"grant_types": ["urn:ietf:params:oauth:grant-type:token-exchange"]}),
            created_at: at,
            last_used_at: Some(at),
        };
        store.put_client(&gateway("old", 1)).await.unwrap();
        store.put_client(&gateway("new", 2)).await.unwrap();
        let stored = store.client("mesh-gateway").await.unwrap().unwrap();
        assert_eq!(
            stored.secret_sha256.as_deref(),
            Some("new"),
            "a rotated secret"
        );
        let purged = store.purge(PurgeCutoffs::at(10_000_000, 60)).await.unwrap();
        assert_eq!(purged.clients, 0);
        assert!(store.client("mesh-gateway").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn an_upstream_state_is_good_for_one_callback() {
        let (_dir, store) = store().await;
        let login = UpstreamLogin {
            request_id: "r".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
        };
        store.save_upstream_login("s", &login, 100).await.unwrap();
        assert_eq!(
            store.take_upstream_login("s", 10).await.unwrap(),
            Some(login)
        );
        assert_eq!(
            store.take_upstream_login("s", 10).await.unwrap(),
            None,
            "a replayed state is refused"
        );
    }

    #[tokio::test]
    async fn an_assertion_is_used_once_until_it_expires() {
        let (_dir, store) = store().await;
        assert!(store.use_assertion("a", 100, 10).await.unwrap());
        assert!(
            !store.use_assertion("a", 100, 50).await.unwrap(),
            "a replay while it lives"
        );
        assert!(store.use_assertion("b", 100, 50).await.unwrap());
        assert!(
            store.use_assertion("a", 300, 100).await.unwrap(),
            "a dead record does not block a later assertion with the same jti"
        );
        assert!(!store.use_assertion("a", 300, 200).await.unwrap());
    }

    #[tokio::test]
    async fn clients_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/auth.db", dir.path().display());
        let client = StoredClient {
            client_id: "c1".into(),
            secret_sha256: None,
            metadata: json!({"redirect_uris": ["http://127.0.0.1/cb"]}),
            created_at: 1,
            last_used_at: None,
        };
        SqliteStore::open(&url)
            .await
            .unwrap()
            .save_client(&client)
            .await
            .unwrap();
        let reopened = SqliteStore::open(&url).await.unwrap();
        assert_eq!(reopened.client("c1").await.unwrap(), Some(client));
        assert_eq!(reopened.client("nope").await.unwrap(), None);
    }

    #[tokio::test]
    async fn consent_is_kept_per_user_client_and_resource() {
        let (_dir, store) = store().await;
        store
            .save_consent("dev:alice", "c1", "https://mcp/a", "mcp:tools", 1)
            .await
            .unwrap();
        assert_eq!(
            store
                .consent("dev:alice", "c1", "https://mcp/a")
                .await
                .unwrap(),
            Some("mcp:tools".into())
        );
        assert_eq!(
            store
                .consent("dev:alice", "c1", "https://mcp/b")
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .consent("dev:bob", "c1", "https://mcp/a")
                .await
                .unwrap(),
            None
        );
        store
            .save_consent(
                "dev:alice",
                "c1",
                "https://mcp/a",
                "mcp:tools offline_access",
                2,
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .consent("dev:alice", "c1", "https://mcp/a")
                .await
                .unwrap(),
            Some("mcp:tools offline_access".into())
        );
    }

    #[tokio::test]
    async fn a_pending_request_remembers_who_signed_in() {
        let (_dir, store) = store().await;
        let pending = PendingRequest {
            client_id: "c1".into(),
            client_name: None,
            redirect_uri: "http://127.0.0.1/cb".into(),
            state: None,
            code_challenge: "x".into(),
            resource: "https://mcp/a".into(),
            scope: "mcp:tools".into(),
        };
        store.save_request("r", "b", &pending, 100).await.unwrap();
        assert_eq!(
            store.request("r", 10).await.unwrap().unwrap().signed_in,
            None
        );
        let signed_in = SignedIn {
            user: grant().user,
            sealed_upstream: Some("c2VhbGVk".into()),
        };
        store.save_sign_in("r", &signed_in).await.unwrap();
        let stored = store.request("r", 10).await.unwrap().unwrap();
        assert_eq!(
            (stored.request, stored.signed_in),
            (pending, Some(signed_in))
        );
        assert_eq!(store.request("r", 100).await.unwrap(), None, "expired");
    }

    #[test]
    fn the_url_scheme_picks_the_database_and_a_password_never_shows() {
        assert_eq!(
            Backend::of("sqlite://a.db?mode=rwc").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::of("postgres://mcp:s3cret@db:5432/auth").unwrap(),
            Backend::Postgres
        );
        let err = Backend::of("mysql://root:s3cret@db/auth").unwrap_err();
        assert!(err.to_string().contains("sqlite: or postgres://"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert_eq!(redacted("sqlite://a.db"), "sqlite://a.db");
    }
}
