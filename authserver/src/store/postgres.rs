//! PostgreSQL, for several replicas: they share clients, consents and grants, and a code or
//! refresh token is redeemed by one conditional `UPDATE`, so two replicas cannot both accept it.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;

use super::sql::sql_store;
use super::{
    redacted, Grant, PendingRequest, Redeemed, StoreError, StoredClient, StoredRequest,
    UpstreamLogin,
};

#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects and applies the migrations (sqlx takes an advisory lock, so replicas starting
    /// together migrate once).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|err| StoreError::Open {
                url: redacted(url),
                message: err.to_string(),
            })?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

sql_store!(PostgresStore);
