//! The default store: one SQLite file in WAL mode, for a single replica.
//!
//! SQLite allows one writer at a time; several connections writing at once do not write faster,
//! they wait on each other's locks and, past the busy timeout (or at once, for a transaction
//! that read before it wrote), fail with "database is locked". So every statement that writes
//! goes through one connection, where writes queue in order instead of in SQLite's lock retry
//! loop; reads (which WAL never blocks) go through a pool of read-only connections, so they run
//! in parallel with the writer and with each other.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteQueryResult, SqliteRow, SqliteStatement, SqliteSynchronous, SqliteTypeInfo,
};
use sqlx::{Describe, Either, Execute, Executor, Row};

use super::sql::sql_store;
use super::{
    redacted, Grant, PendingRequest, Redeemed, StoreError, StoredClient, StoredRequest,
    UpstreamLogin,
};

/// Read-only connections: SQLite's own default page cache per connection makes more of them
/// cost memory for little gain on a single replica.
const READERS: u32 = 4;

/// The one writer and the readers, used by the shared SQL (`sql.rs`) as one executor: a
/// statement is sent to the readers only if it is a plain `SELECT`; anything else (including a
/// `DELETE … RETURNING`) goes to the writer. A misrouted write would fail on a read-only
/// connection rather than race the writer.
#[derive(Debug, Clone)]
pub struct Pools {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl Pools {
    fn for_sql(&self, sql: &str) -> &SqlitePool {
        if is_plain_select(sql) {
            &self.reader
        } else {
            &self.writer
        }
    }

    /// A transaction, on the writer (a transaction that writes must hold the one writer from
    /// its first statement, or it could fail to upgrade its read lock). The shared SQL calls
    /// `self.pool.begin()` on either backend, as on a sqlx pool.
    #[cfg_attr(not(test), allow(dead_code))]
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, Sqlite>, sqlx::Error> {
        self.writer.begin().await
    }
}

/// Whether `sql` only reads: it starts with `SELECT` (case-insensitive).
fn is_plain_select(sql: &str) -> bool {
    sql.trim_start()
        .get(..6)
        .is_some_and(|word| word.eq_ignore_ascii_case("select"))
}

impl<'p> Executor<'p> for &'p Pools {
    type Database = Sqlite;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<SqliteQueryResult, SqliteRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        self.for_sql(query.sql()).fetch_many(query)
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<SqliteRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        self.for_sql(query.sql()).fetch_optional(query)
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [SqliteTypeInfo],
    ) -> BoxFuture<'e, Result<SqliteStatement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.for_sql(sql).prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Sqlite>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.writer.describe(sql)
    }
}

#[derive(Clone)]
pub struct SqliteStore {
    pool: Pools,
}

impl SqliteStore {
    /// Opens (creating if needed) the database and applies the migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = options(url)?.create_if_missing(true);
        create_private(options.get_filename()).map_err(|err| open_error(url, err.to_string()))?;
        Self::open_with(url, options).await
    }

    /// Opens a database file that exists (`None` if it does not, or is in memory), for the
    /// admin command: a mistyped path must not become a new, empty database.
    pub async fn open_existing(url: &str) -> Result<Option<Self>, StoreError> {
        let options = options(url)?.create_if_missing(false);
        let path = options.get_filename();
        if is_in_memory(path) || !path.exists() {
            return Ok(None);
        }
        Self::open_with(url, options).await.map(Some)
    }

    async fn open_with(url: &str, options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let open_error = |message: String| open_error(url, message);
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL loses no committed transaction on a process crash (only,
            // possibly, the last ones on a power loss) and spares an fsync per commit.
            .synchronous(SqliteSynchronous::Normal)
            // Another process (the admin command, a backup, the sqlite3 shell) may hold the lock
            // for a moment.
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let in_memory = is_in_memory(options.get_filename());
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // The writer is kept for the life of the process: `sqlite::memory:` lives in it,
            // and reopening costs the page cache.
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await
            .map_err(|err| open_error(err.to_string()))?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        // An in-memory database is one connection's: it reads through the writer too.
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(READERS)
                .connect_with(options.read_only(true))
                .await
                .map_err(|err| open_error(err.to_string()))?
        };
        Ok(Self {
            pool: Pools { writer, reader },
        })
    }

    /// Closes the pools: every later statement fails, as in a database outage.
    #[cfg(test)]
    pub async fn close(&self) {
        self.pool.writer.close().await;
        self.pool.reader.close().await;
    }
}

fn open_error(url: &str, message: String) -> StoreError {
    StoreError::Open {
        url: redacted(url),
        message,
    }
}

fn options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
    SqliteConnectOptions::from_str(url).map_err(|err| open_error(url, err.to_string()))
}

/// Whether the database has no file (`sqlite::memory:`, which sqlx names `file:sqlx-in-memory-…`).
fn is_in_memory(path: &Path) -> bool {
    path.as_os_str().is_empty()
        || path
            .to_str()
            .is_some_and(|p| p == ":memory:" || p.starts_with("file:"))
}

/// Creates the database file readable and writable by the server's user only (SQLite creates
/// its `-wal` and `-shm` files with the same mode): it holds client secrets' hashes, refresh
/// tokens' hashes and encrypted upstream tokens. An existing file is left as it is, with a
/// warning if others can read it. In-memory databases have no file.
fn create_private(path: &Path) -> std::io::Result<()> {
    if is_in_memory(path) {
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

sql_store!(
    SqliteStore,
    SqliteRow,
    client = "json_extract(grant_json, '$.client_id')",
    subject = "json_extract(grant_json, '$.user.subject')"
);

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
            last_used_at: None,
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

    #[test]
    fn only_a_plain_select_goes_to_the_readers() {
        for sql in ["SELECT 1", "  select scope FROM consents", "SeLeCt x"] {
            assert!(is_plain_select(sql), "{sql}");
        }
        for sql in [
            "DELETE FROM upstream_logins WHERE state_sha256 = $1 RETURNING request_id",
            "UPDATE codes SET used = 1",
            "INSERT INTO clients VALUES (1)",
            "WITH x AS (SELECT 1) DELETE FROM codes",
            "sel",
            "",
        ] {
            assert!(!is_plain_select(sql), "{sql}");
        }
    }

    #[tokio::test]
    async fn readers_cannot_write_and_see_what_the_writer_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite://{}/auth.db", dir.path().display()))
            .await
            .unwrap();
        let mut tx = store.pool.begin().await.unwrap();
        sqlx::query("INSERT INTO clients (client_id, metadata, created_at) VALUES ('tx', '{}', 1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(store.client("tx").await.unwrap().is_some());
        let err = sqlx::query("DELETE FROM clients")
            .execute(&store.pool.reader)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
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
