//! Durable state behind a trait: SQLite (one file, WAL) by default, so that a restart loses no
//! registered client; a PostgreSQL implementation can follow for several replicas.

use std::future::Future;
use std::str::FromStr;

use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

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

/// What the server keeps across restarts.
pub trait Store: Clone + Send + Sync + 'static {
    fn save_client(
        &self,
        client: &StoredClient,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn client(
        &self,
        client_id: &str,
    ) -> impl Future<Output = Result<Option<StoredClient>, StoreError>> + Send;
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
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

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
