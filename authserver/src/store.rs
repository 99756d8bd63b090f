//! Durable state behind a trait: SQLite (one file, WAL) by default, so that a restart loses no
//! registered client; a PostgreSQL implementation can follow for several replicas.

use std::future::Future;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use crate::grant::Grant;

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
pub trait Store: Clone + Send + Sync + 'static {
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

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database and applies the migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let open_error = |message: String| StoreError::Open {
            url: url.to_owned(),
            message,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|err| open_error(err.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|err| open_error(err.to_string()))?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }
}

impl Store for SqliteStore {
    async fn save_client(&self, client: &StoredClient) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO clients (client_id, secret_sha256, metadata, created_at) VALUES (?, ?, ?, ?)")
            .bind(&client.client_id)
            .bind(&client.secret_sha256)
            .bind(client.metadata.to_string())
            .bind(client.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn client(&self, client_id: &str) -> Result<Option<StoredClient>, StoreError> {
        let row = sqlx::query("SELECT client_id, secret_sha256, metadata, created_at FROM clients WHERE client_id = ?")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let metadata: String = row.try_get("metadata")?;
        Ok(Some(StoredClient {
            client_id: row.try_get("client_id")?,
            secret_sha256: row.try_get("secret_sha256")?,
            metadata: serde_json::from_str(&metadata)?,
            created_at: row.try_get("created_at")?,
        }))
    }

    async fn save_request(
        &self,
        id: &str,
        browser_id: &str,
        request: &PendingRequest,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO auth_requests (id, browser_id, params, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(id)
        .bind(browser_id)
        .bind(serde_json::to_string(request)?)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn request(&self, id: &str, now: i64) -> Result<Option<StoredRequest>, StoreError> {
        let row = sqlx::query("SELECT browser_id, params, consented FROM auth_requests WHERE id = ? AND expires_at > ?")
            .bind(id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let params: String = row.try_get("params")?;
        Ok(Some(StoredRequest {
            browser_id: row.try_get("browser_id")?,
            request: serde_json::from_str(&params)?,
            consented: row.try_get::<i64, _>("consented")? != 0,
        }))
    }

    async fn mark_consented(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE auth_requests SET consented = 1 WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_request(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM auth_requests WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn consent(
        &self,
        browser_id: &str,
        client_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT scope FROM consents WHERE browser_id = ? AND client_id = ?")
            .bind(browser_id)
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("scope")).transpose()?)
    }

    async fn save_consent(
        &self,
        browser_id: &str,
        client_id: &str,
        scope: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT OR REPLACE INTO consents (browser_id, client_id, scope, created_at) VALUES (?, ?, ?, ?)")
            .bind(browser_id)
            .bind(client_id)
            .bind(scope)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn save_code(
        &self,
        code_sha256: &str,
        grant: &Grant,
        family_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO codes (code_sha256, grant_json, family_id, expires_at) VALUES (?, ?, ?, ?)")
            .bind(code_sha256)
            .bind(serde_json::to_string(grant)?)
            .bind(family_id)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn redeem_code(&self, code_sha256: &str, now: i64) -> Result<Redeemed, StoreError> {
        self.redeem("codes", "code_sha256", code_sha256, now).await
    }

    async fn save_refresh(
        &self,
        token_sha256: &str,
        grant: &Grant,
        family_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO refresh_tokens (token_sha256, family_id, grant_json, expires_at) VALUES (?, ?, ?, ?)")
            .bind(token_sha256)
            .bind(family_id)
            .bind(serde_json::to_string(grant)?)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn redeem_refresh(&self, token_sha256: &str, now: i64) -> Result<Redeemed, StoreError> {
        self.redeem("refresh_tokens", "token_sha256", token_sha256, now)
            .await
    }

    async fn refresh_family(
        &self,
        token_sha256: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row =
            sqlx::query("SELECT family_id, grant_json FROM refresh_tokens WHERE token_sha256 = ?")
                .bind(token_sha256)
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let grant: Grant = serde_json::from_str(&row.try_get::<String, _>("grant_json")?)?;
        Ok(Some((row.try_get("family_id")?, grant.client_id)))
    }

    async fn revoke_family(
        &self,
        family_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT OR IGNORE INTO revoked_families (family_id, revoked_at, reason) VALUES (?, ?, ?)")
            .bind(family_id)
            .bind(now)
            .bind(reason)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn release_refresh(&self, token_sha256: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE refresh_tokens SET used = 0 WHERE token_sha256 = ?")
            .bind(token_sha256)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn save_upstream_login(
        &self,
        state_sha256: &str,
        login: &UpstreamLogin,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO upstream_logins (state_sha256, request_id, nonce, pkce_verifier, expires_at) VALUES (?, ?, ?, ?, ?)")
            .bind(state_sha256)
            .bind(&login.request_id)
            .bind(&login.nonce)
            .bind(&login.pkce_verifier)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn take_upstream_login(
        &self,
        state_sha256: &str,
        now: i64,
    ) -> Result<Option<UpstreamLogin>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM upstream_logins WHERE state_sha256 = ? RETURNING request_id, nonce, pkce_verifier, expires_at",
        )
        .bind(state_sha256)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        if row.try_get::<i64, _>("expires_at")? <= now {
            return Ok(None);
        }
        Ok(Some(UpstreamLogin {
            request_id: row.try_get("request_id")?,
            nonce: row.try_get("nonce")?,
            pkce_verifier: row.try_get("pkce_verifier")?,
        }))
    }

    async fn save_upstream_tokens(
        &self,
        family_id: &str,
        sealed: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT OR REPLACE INTO upstream_tokens (family_id, sealed, updated_at) VALUES (?, ?, ?)")
            .bind(family_id)
            .bind(sealed)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn upstream_tokens(&self, family_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT sealed FROM upstream_tokens WHERE family_id = ?")
            .bind(family_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("sealed")).transpose()?)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

impl SqliteStore {
    /// Marks a single-use credential used in one statement (so two replicas or two requests
    /// cannot both redeem it), then tells what was found.
    async fn redeem(
        &self,
        table: &str,
        key: &str,
        hash: &str,
        now: i64,
    ) -> Result<Redeemed, StoreError> {
        let claimed = sqlx::query(&format!(
            "UPDATE {table} SET used = 1 WHERE {key} = ? AND used = 0 AND expires_at > ? \
             AND family_id NOT IN (SELECT family_id FROM revoked_families)"
        ))
        .bind(hash)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let row = sqlx::query(&format!(
            "SELECT grant_json, family_id, used FROM {table} WHERE {key} = ?"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Redeemed::Invalid);
        };
        let family_id: String = row.try_get("family_id")?;
        if claimed {
            let grant: Grant = serde_json::from_str(&row.try_get::<String, _>("grant_json")?)?;
            return Ok(Redeemed::Fresh {
                grant: Box::new(grant),
                family_id,
            });
        }
        let used: i64 = row.try_get("used")?;
        Ok(if used != 0 {
            Redeemed::Replayed { family_id }
        } else {
            Redeemed::Invalid
        })
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
            user: crate::grant::User {
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
}
