//! The default store: one SQLite file in WAL mode, for a single replica.

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use super::sql::sql_store;
use super::{
    redacted, Grant, PendingRequest, Redeemed, StoreError, StoredClient, StoredRequest,
    UpstreamLogin,
};

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database and applies the migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let open_error = |message: String| StoreError::Open {
            url: redacted(url),
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
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

sql_store!(SqliteStore);
