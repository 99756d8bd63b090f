//! PostgreSQL, for several replicas: they share clients, consents and grants, and a code or
//! refresh token is redeemed by one conditional `UPDATE`, so two replicas cannot both accept it.

use std::time::Duration;

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Row};

use super::sql::sql_store;
use super::{
    redacted, Grant, PendingRequest, Redeemed, StoreError, StoredClient, StoredRequest,
    UpstreamLogin,
};

/// Longest wait for the database at start, and for a connection from the pool.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects and applies the migrations (sqlx takes an advisory lock, so replicas starting
    /// together migrate once).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let failed = |message: String| StoreError::Open {
            url: redacted(url),
            message,
        };
        let options = PgConnectOptions::from_str(url).map_err(|err| failed(err.to_string()))?;
        // One connection first: its error names the cause (refused, no such host, TLS, a wrong
        // password), which the pool reports only as "timed out".
        let first = tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await;
        let unreachable = |cause: String| {
            failed(format!(
                "cannot connect to PostgreSQL at {}:{} ({cause}); check that it runs, the host and port, and that the network lets this server reach it",
                options.get_host(),
                options.get_port()
            ))
        };
        match first {
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
            }
            Ok(Err(err)) => return Err(unreachable(err.to_string())),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )))
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|err| failed(err.to_string()))?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

sql_store!(
    PostgresStore,
    sqlx::postgres::PgRow,
    client = "CAST(grant_json AS jsonb) ->> 'client_id'",
    subject = "CAST(grant_json AS jsonb) -> 'user' ->> 'subject'"
);
