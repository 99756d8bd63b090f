//! The default store: one SQLite file in WAL mode, for a single replica.
//!
//! SQLite allows one writer at a time; several pooled connections writing at once do not write
//! faster, they wait on each other's locks and, past the busy timeout, fail with "database is
//! locked". So the pool has exactly one connection: statements queue in the pool (fairly, in
//! order) instead of in SQLite's lock retry loop, and a statement never fails for contention.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
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
            // In WAL mode NORMAL loses no committed transaction on a process crash (only,
            // possibly, the last ones on a power loss) and spares an fsync per commit.
            .synchronous(SqliteSynchronous::Normal)
            // Another process (a backup, the sqlite3 shell) may hold the lock for a moment.
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        create_private(options.get_filename()).map_err(|err| open_error(err.to_string()))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            // The one connection is kept for the life of the process: `sqlite::memory:` lives
            // in it, and reopening costs the page cache.
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|err| open_error(err.to_string()))?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Closes the pool: every later statement fails, as in a database outage.
    #[cfg(test)]
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the database file readable and writable by the server's user only (SQLite creates
/// its `-wal` and `-shm` files with the same mode): it holds client secrets' hashes, refresh
/// tokens' hashes and encrypted upstream tokens. An existing file is left as it is, with a
/// warning if others can read it. In-memory databases have no file.
fn create_private(path: &Path) -> std::io::Result<()> {
    let in_memory = path.as_os_str().is_empty()
        || path
            .to_str()
            .is_some_and(|p| p == ":memory:" || p.starts_with("file:"));
    if in_memory {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    match file.open(path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the database file is readable by other users; chmod 600 it");
                }
            }
            Ok(())
        }
        Err(err) => Err(err),
    }
}

sql_store!(SqliteStore);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use serde_json::json;

    fn client(id: &str) -> StoredClient {
        StoredClient {
            client_id: id.into(),
            secret_sha256: None,
            metadata: json!({"redirect_uris": ["http://127.0.0.1/cb"]}),
            created_at: 1,
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_database_file_is_private_to_the_server() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.db");
        SqliteStore::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn an_in_memory_database_keeps_what_is_written() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        store.save_client(&client("c1")).await.unwrap();
        assert_eq!(store.client("c1").await.unwrap(), Some(client("c1")));
    }

    #[tokio::test]
    async fn concurrent_writers_queue_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite://{}/auth.db", dir.path().display()))
            .await
            .unwrap();
        let writers = (0..64).map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.save_client(&client(&format!("c{i}"))).await })
        });
        for writer in writers {
            writer.await.unwrap().unwrap();
        }
        assert!(store.client("c63").await.unwrap().is_some());
    }
}
