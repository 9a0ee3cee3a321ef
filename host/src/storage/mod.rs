//! Storage: the only module that runs SQL.
//!
//! Owns the SQLite database (WAL, foreign keys, versioned migrations), the serialisation of writes
//! (one writer connection, `BEGIN IMMEDIATE`), a small pool of read-only connections, and the
//! mapping between rows and [`crate::models`] types. All blocking work runs on tokio's blocking
//! pool. Callers compose transactions from [`Db`] methods inside [`Storage::write`]; events inserted
//! in a write are returned only once that write has committed, so nothing is announced that was not
//! stored. Must not know about HTTP, Docker or plugins.

// The one home of SQL (host/clippy.toml refuses its types anywhere else).
#![allow(clippy::disallowed_types)]

mod auth;
mod fires;
mod objects;
mod queries;
mod retention;
mod rollouts;
mod runs;
mod secret_values;
mod secrets;
mod subscriptions;

pub use fires::{Recorded, StoredFire};
pub use objects::ObjectScope;
pub use retention::PrunedRuns;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use rusqlite_migration::{M, Migrations};

pub use queries::Db;
pub use runs::{KeptTask, QueuedRun};
pub use secret_values::SecretValues;

use crate::models::Event;

/// The schema migrations, in order. Never edit a released one: append a new one.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_subscription_handles.sql"),
    include_str!("migrations/0003_fires.sql"),
    include_str!("migrations/0004_rollouts.sql"),
    include_str!("migrations/0005_image_digest.sql"),
    include_str!("migrations/0006_traces_and_kept_tasks.sql"),
    include_str!("migrations/0007_page_and_queue_indexes.sql"),
    include_str!("migrations/0008_page_counts.sql"),
];

/// How many idle read connections are kept open.
const MAX_IDLE_READERS: usize = 8;

/// Each read connection's page cache, in KiB.
const READER_CACHE_KIB: u64 = 512;

/// What went wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    Conflict(String),
    #[error("could not open the database at {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the database at {path} has schema version {found}, newer than the {supported} this Gofer \
         knows; it was written by a newer Gofer: run that version, or use another data directory"
    )]
    TooNew {
        path: PathBuf,
        found: usize,
        supported: usize,
    },
    #[error("could not migrate the database: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// A number from a request (an id, a version) beyond what SQLite's integers hold.
    #[error("a number in the request is too large (the largest is {})", i64::MAX)]
    NumberTooLarge,
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error("the stored value of {column} could not be decoded: {source}")]
    Corrupt {
        column: &'static str,
        source: serde_json::Error,
    },
    #[error("the database worker stopped unexpectedly: {0}")]
    Worker(String),
}

impl From<rusqlite::Error> for StorageError {
    fn from(error: rusqlite::Error) -> Self {
        match error {
            rusqlite::Error::ToSqlConversionFailure(_) => Self::NumberTooLarge,
            other => Self::Sqlite(other),
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// One page of a list: at most `limit` rows after skipping `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u64,
    pub offset: u64,
}

/// How one page is read: `offset` rows skipped in `reverse` order, and whether the rows read must
/// be turned round (`flipped`) because the page was read from the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageRead {
    pub limit: u64,
    pub offset: u64,
    pub reverse: bool,
    pub flipped: bool,
}

impl Page {
    /// Plans reading this page of `total` rows listed in `reverse` order from whichever end is
    /// nearer, so that a deep page skips few rows. `None` when the page is past the end.
    pub(crate) fn read_from_nearer_end(self, total: u64, reverse: bool) -> Option<PageRead> {
        if self.limit == 0 || self.offset >= total {
            return None;
        }
        if self.offset <= total / 2 {
            return Some(PageRead {
                limit: self.limit,
                offset: self.offset,
                reverse,
                flipped: false,
            });
        }
        let end = self.offset.saturating_add(self.limit).min(total);
        Some(PageRead {
            limit: end - self.offset,
            offset: total - end,
            reverse: !reverse,
            flipped: true,
        })
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Storage {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    idle_readers: Arc<Mutex<Vec<Connection>>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("path", &self.path).finish()
    }
}

impl Storage {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    /// Refuses a database written by a newer Gofer.
    pub fn open(path: &Path) -> Result<Self> {
        let mut writer = open_connection(path, false)?;
        let migrations = Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect());
        let found: usize = writer.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if found > MIGRATIONS.len() {
            return Err(StorageError::TooNew {
                path: path.to_path_buf(),
                found,
                supported: MIGRATIONS.len(),
            });
        }
        migrations.to_latest(&mut writer)?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Arc::new(Mutex::new(writer)),
            idle_readers: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// The schema version this binary brings databases to.
    pub fn schema_version() -> usize {
        MIGRATIONS.len()
    }

    /// Copies the SQLite database at `from` to `to` with SQLite's online backup API: a
    /// consistent snapshot, taken while a server may be writing (it proceeds in steps and starts
    /// over when a write lands between them). `to` must not exist.
    pub fn backup_file(from: &Path, to: &Path) -> Result<()> {
        let open = |path: &Path, flags: OpenFlags| {
            Connection::open_with_flags(path, flags).map_err(|source| StorageError::Open {
                path: path.to_path_buf(),
                source,
            })
        };
        let source = open(from, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        source.busy_timeout(std::time::Duration::from_secs(10))?;
        let mut target = open(
            to,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        {
            let backup = rusqlite::backup::Backup::new(&source, &mut target)?;
            backup.run_to_completion(256, std::time::Duration::from_millis(5), None)?;
        }
        // One self-contained file: no WAL beside it.
        target.pragma_update(None, "journal_mode", "DELETE")?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on a read-only connection, off the async runtime.
    pub async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T> + Send + 'static,
    {
        let this = self.clone();
        run_blocking(move || {
            let conn = this.take_reader()?;
            let outcome = work(&Db::new(&conn));
            this.return_reader(conn);
            outcome
        })
        .await
    }

    /// Runs `work` in one immediate transaction on the single writer connection, off the async
    /// runtime. Commits if `work` succeeds, rolls back otherwise. Returns `work`'s value and the
    /// events it stored, which the caller may now publish.
    pub async fn write<T, F>(&self, work: F) -> Result<(T, Vec<Event>)>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T> + Send + 'static,
    {
        let writer = Arc::clone(&self.writer);
        let started = std::time::Instant::now();
        let written = run_blocking(move || {
            let mut conn = writer
                .lock()
                .map_err(|_| StorageError::Worker("writer lock poisoned".into()))?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let db = Db::new(&tx);
            let value = work(&db)?;
            let events = db.take_events();
            tx.commit()?;
            Ok((value, events))
        })
        .await;
        crate::metrics::metrics()
            .sqlite_write_seconds
            .observe(started.elapsed().as_secs_f64());
        written
    }

    fn take_reader(&self) -> Result<Connection> {
        let idle = self
            .idle_readers
            .lock()
            .map_err(|_| StorageError::Worker("reader pool lock poisoned".into()))?
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => open_connection(&self.path, true),
        }
    }

    fn return_reader(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle_readers.lock()
            && idle.len() < MAX_IDLE_READERS
        {
            idle.push(conn);
        }
    }
}

async fn run_blocking<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join| StorageError::Worker(join.to_string()))?
}

/// Prepared statements kept per connection.
const STATEMENT_CACHE_CAPACITY: usize = 128;

fn open_connection(path: &Path, read_only: bool) -> Result<Connection> {
    let open_error = |source| StorageError::Open {
        path: path.to_path_buf(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_error)?;
    // Every query Gofer makes stays prepared (there are about a hundred; rusqlite keeps 16 by
    // default, and re-parsing the evicted ones showed in the list endpoints' profile).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;",
    )
    .map_err(open_error)?;
    if read_only {
        // Readers keep a smaller page cache than the writer (SQLite's default, 2 MiB): there are
        // up to MAX_IDLE_READERS of them, and the OS caches the file for all of them anyway.
        conn.execute_batch(&format!(
            "PRAGMA query_only = ON; PRAGMA cache_size = -{READER_CACHE_KIB};"
        ))
        .map_err(open_error)?;
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{EventKind, Namespace};

    fn namespace(id: &str) -> Namespace {
        Namespace {
            id: id.into(),
            name: "N".into(),
            description: "d".into(),
            created: 1,
            modified: 0,
        }
    }

    /// Reads `read` from `rows` the way the SQL does: skip `offset` in its order, take `limit`.
    fn apply(rows: &[u64], read: PageRead) -> Vec<u64> {
        let ordered: Vec<u64> = if read.reverse {
            rows.iter().rev().copied().collect()
        } else {
            rows.to_vec()
        };
        let mut page: Vec<u64> = ordered
            .into_iter()
            .skip(read.offset as usize)
            .take(read.limit as usize)
            .collect();
        if read.flipped {
            page.reverse();
        }
        page
    }

    #[test]
    fn a_page_read_from_the_nearer_end_holds_the_same_rows() {
        for total in 0..12u64 {
            let rows: Vec<u64> = (1..=total).collect();
            for reverse in [false, true] {
                let ordered: Vec<u64> = if reverse {
                    rows.iter().rev().copied().collect()
                } else {
                    rows.clone()
                };
                for offset in 0..14u64 {
                    for limit in 0..5u64 {
                        let page = Page { limit, offset };
                        let expected: Vec<u64> = ordered
                            .iter()
                            .skip(offset as usize)
                            .take(limit as usize)
                            .copied()
                            .collect();
                        let got = page
                            .read_from_nearer_end(total, reverse)
                            .map(|read| {
                                assert!(
                                    read.offset <= total / 2 + 1,
                                    "{page:?} of {total}: {read:?}"
                                );
                                apply(&rows, read)
                            })
                            .unwrap_or_default();
                        assert_eq!(got, expected, "{page:?} of {total}, reverse {reverse}");
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn a_failed_write_stores_nothing_and_announces_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&dir.path().join("gofer.db")).unwrap();
        let failed = storage
            .write(|db| {
                db.insert_namespace(&namespace("first"))?;
                db.insert_event(EventKind::CreatedNamespace {
                    namespace_id: "first".into(),
                })?;
                db.insert_namespace(&namespace("first"))
            })
            .await;
        assert!(matches!(failed, Err(StorageError::AlreadyExists(_))));
        let stored = storage.read(|db| db.get_namespace("first")).await;
        assert!(matches!(stored, Err(StorageError::NotFound(_))));
        let events = storage
            .read(|db| {
                db.list_events(
                    Page {
                        limit: 10,
                        offset: 0,
                    },
                    false,
                )
            })
            .await
            .unwrap();
        assert!(events.is_empty());
    }

    #[tokio::test]
    async fn a_database_from_a_newer_gofer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gofer.db");
        drop(Storage::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let error = Storage::open(&path).unwrap_err();
        assert!(matches!(error, StorageError::TooNew { found: 99, .. }));
        assert!(error.to_string().contains("newer"));
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gofer.db");
        let storage = Storage::open(&path).unwrap();
        storage
            .write(|db| db.insert_namespace(&namespace("kept")))
            .await
            .unwrap();
        drop(storage);
        let storage = Storage::open(&path).unwrap();
        assert_eq!(
            storage
                .read(|db| db.get_namespace("kept"))
                .await
                .unwrap()
                .id,
            "kept"
        );
    }
}
