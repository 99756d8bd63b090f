//! Durable state behind a trait: SQLite (one file, WAL) by default, so that a restart loses no
//! registered client; PostgreSQL for several replicas sharing one database.

use std::future::Future;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::oauth::grant::Grant;

pub mod housekeeping;
mod postgres;
mod sql;
mod sqlite;

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
}

/// An authorization request between `/oauth/authorize` and the issued code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub resource: String,
    pub scope: String,
}

/// A pending request as stored: whose browser started it and whether consent was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    pub browser_id: String,
    pub request: PendingRequest,
    pub consented: bool,
}

/// What redeeming a single-use credential (code or refresh token) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    Fresh {
        grant: Box<Grant>,
        family_id: String,
    },
    /// Already used: a replay. The family should die.
    Replayed { family_id: String },
    /// Unknown, expired, or of a revoked family.
    Invalid,
}

type Io<T> = Result<T, StoreError>;

/// An upstream login in flight: which request it serves and the secrets its callback needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLogin {
    pub request_id: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// What the server keeps across restarts.
pub trait Store: Housekeeping + Clone + Send + Sync + 'static {
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
    fn mark_consented(&self, id: &str) -> impl Future<Output = Io<()>> + Send;
    fn delete_request(&self, id: &str) -> impl Future<Output = Io<()>> + Send;
    fn consent(
        &self,
        browser_id: &str,
        client_id: &str,
    ) -> impl Future<Output = Io<Option<String>>> + Send;
    fn save_consent(
        &self,
        browser_id: &str,
        client_id: &str,
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
    fn save_refresh(
        &self,
        token_sha256: &str,
        grant: &Grant,
        family_id: &str,
        expires_at: i64,
    ) -> impl Future<Output = Io<()>> + Send;
    fn redeem_refresh(
        &self,
        token_sha256: &str,
        now: i64,
    ) -> impl Future<Output = Io<Redeemed>> + Send;
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
    /// Undoes a refresh token's redemption when the upstream could not be asked (nothing is lost).
    fn release_refresh(&self, token_sha256: &str) -> impl Future<Output = Io<()>> + Send;
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
            .save_refresh("r1", &grant(), "fam", 1000)
            .await
            .unwrap();
        store
            .save_refresh("r2", &grant(), "fam", 1000)
            .await
            .unwrap();
        store.revoke_family("fam", "reuse", 5).await.unwrap();
        assert_eq!(
            store.redeem_refresh("r1", 10).await.unwrap(),
            Redeemed::Invalid
        );
        assert_eq!(
            store.refresh_family("r2").await.unwrap(),
            Some(("fam".into(), "c1".into()))
        );
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
    async fn a_released_refresh_token_can_be_redeemed_again() {
        let (_dir, store) = store().await;
        store
            .save_refresh("r", &grant(), "fam", 1000)
            .await
            .unwrap();
        assert!(matches!(
            store.redeem_refresh("r", 1).await.unwrap(),
            Redeemed::Fresh { .. }
        ));
        store.release_refresh("r").await.unwrap();
        assert!(matches!(
            store.redeem_refresh("r", 1).await.unwrap(),
            Redeemed::Fresh { .. }
        ));
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
