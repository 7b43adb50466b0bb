//! SQL storage and locks for certstore: PostgreSQL, MySQL/MariaDB and SQLite behind one
//! type, [`SqlStorage`], implementing [`Storage`] and [`Locker`].
//!
//! ```
//! use cert_core::{Locker, Storage};
//! use cert_sql::{SqlConfig, SqlStorage};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cert_core::Result<()> {
//! # let dir = tempfile::tempdir().map_err(|e| cert_core::Error::backend("doc", e))?;
//! # let path = dir.path().join("certstore.db");
//! // Any of postgres://, mysql:// (or mariadb://) and sqlite:// URLs.
//! let url = format!("sqlite://{}", path.display());
//! let storage = SqlStorage::connect_with(&url, SqlConfig::default().with_namespace("prod")).await?;
//! storage.store("certificates/example.com/cert.pem", b"PEM").await?;
//! assert_eq!(storage.list("certificates", false).await?, ["certificates/example.com"]);
//!
//! let lease = storage.try_acquire("issue/example.com", Duration::from_secs(30)).await?;
//! assert!(lease.is_some());
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//!
//! - **One type, three dialects.** [`SqlStorage`] holds a pool of the dialect its URL
//!   (or the pool it is given) names, and each dialect has its own statements in a
//!   private module. One public type keeps configuration and callers
//!   dialect-agnostic (a URL picks the database at run time), while hand-written
//!   statements per dialect use each database's native types and atomic upserts, which
//!   sqlx's type-erased `Any` driver cannot express. Each dialect is behind the cargo
//!   feature of the same name (`postgres`, `mysql`, `sqlite`; all on by default).
//! - **Schema.** Two tables, `certstore_kv` and `certstore_locks` by default (see
//!   [`SqlConfig`] for renaming them), created and upgraded by embedded versioned
//!   migrations recorded in `<kv table>_migrations`; see the `schema` module docs for
//!   columns and the cross-process migration lock. Table names are the only text ever
//!   spliced into SQL, and they must be plain identifiers; keys, values, names and
//!   tokens are always bound parameters.
//! - **Ordering and prefixes.** Keys are stored with bytewise collation, so `ORDER BY`
//!   matches the storage contract. Listing and recursive deletion select the key range
//!   `[prefix/, prefix0)` ([`range_start`], [`range_end`]), never `LIKE`, so `%` and `_`
//!   in keys are harmless. Listing pages through the range with keyset pagination
//!   (`name >= cursor ORDER BY name LIMIT n`), and a non-recursive listing skips over each
//!   sub-prefix once it has seen it, so memory stays bounded by the answer.
//! - **Values and prefixes may coexist.** A key may hold a value and also have keys
//!   below it; nothing stored is ever refused or lost because of the hierarchy.
//!   `load` returns the value, `stat` describes the value, `delete` removes both.
//! - **Namespaces.** Every row carries a namespace ([`SqlConfig::namespace`], part of the
//!   primary key), so many independent stores (one per tenant or per test) share one
//!   pair of tables without ever seeing each other's keys or locks.
//! - **Locks.** A lock is a row `(ns, name, token, expires)`, taken in one atomic
//!   statement that inserts it or takes it over only when the existing row has expired
//!   (PostgreSQL and SQLite: `INSERT ... ON CONFLICT DO UPDATE ... WHERE expires <= now
//!   RETURNING token`; MySQL/MariaDB: `INSERT ... ON DUPLICATE KEY UPDATE` with
//!   `IF(expires <= now, new, old)`, then the token read back). Expiry is judged by the
//!   database server's clock (`now()`, `UTC_TIMESTAMP(6)`, SQLite's `julianday('now')`),
//!   so clock skew between nodes cannot break exclusion. Refresh and release match the
//!   token and a live expiry (`... WHERE name = ? AND token = ? AND expires > now`); no
//!   row matched is [`Error::LockLost`]. Session-level advisory locks
//!   (`pg_advisory_lock`, `GET_LOCK`) are not used for leases: they belong to one
//!   connection, and a pool hands out a different one to the next call.
//! - **Fenced writes.** `store_fenced` and `delete_fenced` run in one transaction that
//!   first locks the lease's row where the token matches and the expiry is still ahead
//!   by the database's clock (PostgreSQL and MySQL/MariaDB: `SELECT ... FOR UPDATE`;
//!   SQLite: a `BEGIN IMMEDIATE` transaction, which holds the database's write lock from
//!   its start), then upserts or deletes. No row matched is [`Error::LockLost`] and
//!   nothing is written. A takeover is an update of that same row, so it waits for the
//!   commit and cannot come between the check and the write; a writer paused past its
//!   lease is refused whatever its own clock says.
//! - **Errors.** Lost or refused connections, pool and operation timeouts, I/O and TLS
//!   errors, server shutdown, deadlocks and busy databases are the retryable
//!   [`Error::Unavailable`] (`backend` is `"postgres"`, `"mysql"` or `"sqlite"`); every
//!   other database error is [`Error::Backend`]; the sqlx error is always the source.
//!   Values over [`MAX_VALUE_LEN`](cert_core::MAX_VALUE_LEN) are refused before anything
//!   is sent. The same [`SqlStorage`] recovers by itself once the server is back.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
compile_error!("cert-sql needs at least one of the features postgres, mysql and sqlite");

mod config;
mod error;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
pub mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cert_core::{
    Error, KeyInfo, Lease, LockAdmin, LockInfo, LockToken, Locker, Result, Storage, list_from_keys,
    range_end, range_start, validate_key, validate_prefix, validate_value,
};

pub use config::{
    ConfigError, DEFAULT_KV_TABLE, DEFAULT_LOCK_TABLE, Dialect, MAX_NAMESPACE_LEN,
    MAX_TABLE_NAME_LEN, SqlConfig, check_identifier,
};
#[cfg(feature = "sqlite")]
pub use sqlite::database_files as sqlite_database_files;
/// The `sqlx` this crate is built on, for building pools to pass to
/// [`SqlStorage::from_postgres_pool`] and its siblings.
pub use sqlx;

use schema::Tables;

/// Keys fetched per page while listing.
const LIST_PAGE: usize = 2000;

/// The longest lease accepted; longer times to live are shortened to it.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A [`Storage`] and [`Locker`] in a PostgreSQL, MySQL/MariaDB or SQLite database.
///
/// Cheap to share behind an `Arc`; every call takes a connection from the pool for the
/// duration of one statement (two for a MySQL lock acquisition).
pub struct SqlStorage {
    backend: Backend,
    config: SqlConfig,
}

enum Backend {
    #[cfg(feature = "postgres")]
    Postgres(postgres::Postgres),
    #[cfg(feature = "mysql")]
    MySql(mysql::MySql),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::Sqlite),
}

/// Runs `$body` with `$b` bound to the dialect's statements.
macro_rules! on_backend {
    ($self:expr, $b:ident => $body:expr) => {
        match &$self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres($b) => $body,
            #[cfg(feature = "mysql")]
            Backend::MySql($b) => $body,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite($b) => $body,
        }
    };
}

impl fmt::Debug for SqlStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's options hold credentials: never print them.
        f.debug_struct("SqlStorage")
            .field("dialect", &self.dialect())
            .field("kv_table", &self.config.kv_table)
            .field("lock_table", &self.config.lock_table)
            .field("namespace", &self.config.namespace)
            .finish_non_exhaustive()
    }
}

fn tables(config: &SqlConfig, dialect: Dialect) -> Result<Tables> {
    config
        .validate()
        .map_err(|e| Error::backend(dialect.name(), e))?;
    Ok(Tables {
        kv: config.kv_table.clone(),
        locks: config.lock_table.clone(),
        migrations: config.migrations_table(),
    })
}

impl SqlStorage {
    /// Connects to the database named by `url` with the default [`SqlConfig`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, SqlConfig::default()).await
    }

    /// Connects to the database named by `url` (`postgres://`, `postgresql://`,
    /// `mysql://`, `mariadb://` or `sqlite://`), builds a pool with `config`'s settings
    /// and, unless disabled, creates or upgrades the tables.
    ///
    /// SQLite databases are opened in WAL mode and created if missing, with mode 0600
    /// (their `-wal` and `-shm` files get the database file's mode). An in-memory SQLite
    /// database (`sqlite::memory:`) is private to each pooled connection, so use a file,
    /// or a pool of one connection through [`from_sqlite_pool`](Self::from_sqlite_pool).
    pub async fn connect_with(url: &str, config: SqlConfig) -> Result<Self> {
        let Some(dialect) = Dialect::from_url(url) else {
            return Err(Error::backend(
                "sql",
                ConfigError(
                    "the URL must start with postgres:, mysql:, mariadb: or sqlite:".into(),
                ),
            ));
        };
        let tables = tables(&config, dialect)?;
        let backend = match dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                let pool = postgres::Postgres::connect(url, &config).await?;
                Backend::Postgres(postgres::Postgres::new(pool, &config, tables))
            }
            #[cfg(feature = "mysql")]
            Dialect::MySql => {
                let pool =
                    mysql::MySql::connect(&url.replacen("mariadb:", "mysql:", 1), &config).await?;
                Backend::MySql(mysql::MySql::new(pool, &config, tables))
            }
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => {
                let pool = sqlite::Sqlite::connect(url, &config).await?;
                Backend::Sqlite(sqlite::Sqlite::new(pool, &config, tables))
            }
            #[allow(unreachable_patterns)]
            other => {
                return Err(Error::backend(
                    other.name(),
                    ConfigError(format!("cert-sql was built without the {other} feature")),
                ));
            }
        };
        Self::finish(backend, config).await
    }

    /// A storage over an existing PostgreSQL pool (its own size and timeouts apply).
    #[cfg(feature = "postgres")]
    pub async fn from_postgres_pool(pool: sqlx::PgPool, config: SqlConfig) -> Result<Self> {
        let tables = tables(&config, Dialect::Postgres)?;
        Self::finish(
            Backend::Postgres(postgres::Postgres::new(pool, &config, tables)),
            config,
        )
        .await
    }

    /// A storage over an existing MySQL or MariaDB pool (its own size and timeouts apply).
    #[cfg(feature = "mysql")]
    pub async fn from_mysql_pool(pool: sqlx::MySqlPool, config: SqlConfig) -> Result<Self> {
        let tables = tables(&config, Dialect::MySql)?;
        Self::finish(
            Backend::MySql(mysql::MySql::new(pool, &config, tables)),
            config,
        )
        .await
    }

    /// A storage over an existing SQLite pool (its own size, timeouts and journal mode
    /// apply).
    #[cfg(feature = "sqlite")]
    pub async fn from_sqlite_pool(pool: sqlx::SqlitePool, config: SqlConfig) -> Result<Self> {
        let tables = tables(&config, Dialect::Sqlite)?;
        Self::finish(
            Backend::Sqlite(sqlite::Sqlite::new(pool, &config, tables)),
            config,
        )
        .await
    }

    async fn finish(backend: Backend, config: SqlConfig) -> Result<Self> {
        let storage = SqlStorage { backend, config };
        if storage.config.migrate {
            storage.migrate().await?;
        }
        Ok(storage)
    }

    /// Creates the tables, or upgrades them to this version's schema. Idempotent and
    /// safe to run from many processes at once; run by the constructors unless
    /// [`SqlConfig::migrate`] is off.
    pub async fn migrate(&self) -> Result<()> {
        self.timed(async { on_backend!(self, b => b.migrate().await) })
            .await
    }

    /// The database dialect in use.
    pub fn dialect(&self) -> Dialect {
        match &self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => Dialect::Postgres,
            #[cfg(feature = "mysql")]
            Backend::MySql(_) => Dialect::MySql,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// The configuration this storage was built with.
    pub fn config(&self) -> &SqlConfig {
        &self.config
    }

    /// Closes the pool: waits for connections in use to come back and closes them all.
    /// Later calls fail with [`Error::Unavailable`].
    pub async fn close(&self) {
        on_backend!(self, b => b.pool().close().await);
    }

    /// Runs one operation under the configured operation timeout.
    async fn timed<T>(&self, operation: impl Future<Output = Result<T>>) -> Result<T> {
        match self.config.operation_timeout {
            Some(limit) => match tokio::time::timeout(limit, operation).await {
                Ok(result) => result,
                Err(_) => Err(error::timed_out(self.dialect(), limit)),
            },
            None => operation.await,
        }
    }

    async fn list_all(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        let end = range_end(prefix);
        let skip = if prefix.is_empty() {
            0
        } else {
            prefix.len() + 1
        };
        let mut lower = range_start(prefix);
        let mut found: Vec<String> = Vec::new();
        let limit = i64::try_from(LIST_PAGE).unwrap_or(i64::MAX);
        loop {
            let page = on_backend!(self, b => b.list_page(&lower, end.as_deref(), limit).await)?;
            let full = page.len() >= LIST_PAGE;
            let Some(last) = page.last().cloned() else {
                break;
            };
            if recursive {
                found.extend(page);
            } else {
                for key in page {
                    let child = child_of(&key, skip);
                    if found.last().map(String::as_str) != Some(child) {
                        found.push(child.to_owned());
                    }
                }
            }
            if !full {
                break;
            }
            let child = child_of(&last, skip);
            lower = if !recursive && child.len() < last.len() {
                // Every key below this sub-prefix is already accounted for: jump past
                // them (`'0'` follows `'/'`).
                format!("{child}0")
            } else {
                // The least string above `last` that a valid key could equal or
                // follow: keys never contain control characters.
                format!("{last}\u{1}")
            };
        }
        Ok(list_from_keys(prefix, found, recursive))
    }
}

/// The direct child of the listed prefix that `key` falls in (`skip` is the length of
/// `prefix/`).
fn child_of(key: &str, skip: usize) -> &str {
    match key.get(skip..).and_then(|rest| rest.find('/')) {
        Some(slash) => &key[..skip + slash],
        None => key,
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn from_micros(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    let time = if micros >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    time.unwrap_or(UNIX_EPOCH)
}

/// A time to live in whole microseconds, rounded up so the database's expiry is never
/// earlier than the caller's local deadline.
fn ttl_micros(ttl: Duration) -> i64 {
    let ttl = ttl.min(MAX_TTL);
    let micros = ttl.as_micros() + u128::from(!ttl.subsec_nanos().is_multiple_of(1000));
    i64::try_from(micros).unwrap_or(i64::MAX)
}

/// A write made under a lease, run by a dialect's `fenced` in the transaction that holds
/// the lease's lock row.
pub(crate) enum Write<'a> {
    /// Create or overwrite `key` (the plain `store` statement).
    Store {
        key: &'a str,
        value: &'a [u8],
        modified: i64,
    },
    /// Remove `key` and the keys in `[start, end)` (the plain `delete` statement).
    Delete {
        key: &'a str,
        start: &'a str,
        end: &'a str,
    },
}

fn lock_lost(name: &str) -> Error {
    Error::LockLost {
        name: name.to_owned(),
    }
}

#[async_trait]
impl Storage for SqlStorage {
    async fn store(&self, key: &str, value: &[u8]) -> Result<()> {
        validate_key(key)?;
        validate_value(key, value.len())?;
        let modified = now_micros();
        self.timed(async { on_backend!(self, b => b.store(key, value, modified).await) })
            .await
    }

    async fn load(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        self.timed(async { on_backend!(self, b => b.load(key).await) })
            .await?
            .ok_or_else(|| Error::not_found(key))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let start = range_start(key);
        let end = range_end(key).unwrap_or_default();
        let deleted = self
            .timed(async { on_backend!(self, b => b.delete(key, &start, &end).await) })
            .await?;
        if deleted == 0 {
            return Err(Error::not_found(key));
        }
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        let start = range_start(key);
        let end = range_end(key).unwrap_or_default();
        self.timed(async { on_backend!(self, b => b.exists(key, &start, &end).await) })
            .await
    }

    async fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        self.timed(self.list_all(prefix, recursive)).await
    }

    async fn stat(&self, key: &str) -> Result<KeyInfo> {
        validate_key(key)?;
        self.timed(async {
            if let Some((size, modified)) = on_backend!(self, b => b.stat_key(key).await)? {
                let size = u64::try_from(size)
                    .map_err(|_| error::corrupt(key, "stored size is negative"))?;
                return Ok(KeyInfo::terminal(key, size, from_micros(modified)));
            }
            let start = range_start(key);
            let end = range_end(key).unwrap_or_default();
            match on_backend!(self, b => b.stat_prefix(&start, &end).await)? {
                Some(newest) => Ok(KeyInfo::prefix(key, from_micros(newest))),
                None => Err(Error::not_found(key)),
            }
        })
        .await
    }

    /// The local deadline check first (no round trip), then one transaction that locks
    /// the lease's row, matched by token and a live expiry by the database's clock, and
    /// upserts the value; [`Error::LockLost`], with nothing written, when the row does not
    /// match.
    async fn store_fenced(&self, key: &str, value: &[u8], lease: &Lease) -> Result<()> {
        lease.check_fence()?;
        validate_key(key)?;
        validate_key(lease.name())?;
        validate_value(key, value.len())?;
        let write = Write::Store {
            key,
            value,
            modified: now_micros(),
        };
        let (name, token) = (lease.name(), lease.token().as_str());
        self.timed(async { on_backend!(self, b => b.fenced(name, token, write).await) })
            .await?
            .ok_or_else(|| lock_lost(name))?;
        Ok(())
    }

    /// Like [`store_fenced`](Self::store_fenced), deleting in the same transaction as the
    /// check.
    async fn delete_fenced(&self, key: &str, lease: &Lease) -> Result<()> {
        lease.check_fence()?;
        validate_key(key)?;
        validate_key(lease.name())?;
        let start = range_start(key);
        let end = range_end(key).unwrap_or_default();
        let write = Write::Delete {
            key,
            start: &start,
            end: &end,
        };
        let (name, token) = (lease.name(), lease.token().as_str());
        let deleted = self
            .timed(async { on_backend!(self, b => b.fenced(name, token, write).await) })
            .await?
            .ok_or_else(|| lock_lost(name))?;
        if deleted == 0 {
            return Err(Error::not_found(key));
        }
        Ok(())
    }
}

#[async_trait]
impl Locker for SqlStorage {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        validate_key(name)?;
        let token = LockToken::generate();
        let micros = ttl_micros(ttl);
        let started = Instant::now();
        let taken = self
            .timed(async { on_backend!(self, b => b.acquire(name, token.as_str(), micros).await) })
            .await?;
        Ok(taken.then(|| Lease::new(name, token, ttl, started)))
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let name = lease.name();
        validate_key(name)?;
        let micros = ttl_micros(ttl);
        let started = Instant::now();
        let token = lease.token().as_str();
        let kept = self
            .timed(async { on_backend!(self, b => b.refresh(name, token, micros).await) })
            .await?;
        if kept {
            Ok(lease.renewed(ttl, started))
        } else {
            Err(lock_lost(name))
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let name = lease.name();
        validate_key(name)?;
        let token = lease.token().as_str();
        let released = self
            .timed(async { on_backend!(self, b => b.release(name, token).await) })
            .await?;
        if released {
            Ok(())
        } else {
            Err(lock_lost(name))
        }
    }

    async fn clean_expired_locks(&self) -> Result<usize> {
        self.timed(async { on_backend!(self, b => b.clean_locks().await) })
            .await
    }
}

/// Locks listed from the lock table with the time left by the database's clock;
/// forced release deletes the row whoever holds it.
#[async_trait]
impl LockAdmin for SqlStorage {
    async fn list_locks(&self) -> Result<Vec<LockInfo>> {
        let rows = self
            .timed(async { on_backend!(self, b => b.list_locks().await) })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, token, micros_left)| {
                LockInfo::new(name, token)
                    .with_expires_in(Duration::from_micros(micros_left.max(0).unsigned_abs()))
            })
            .collect())
    }

    async fn force_release(&self, name: &str) -> Result<bool> {
        validate_key(name)?;
        self.timed(async { on_backend!(self, b => b.force_release(name).await) })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_and_times() {
        assert_eq!(child_of("a/b/c", 2), "a/b");
        assert_eq!(child_of("a/b", 2), "a/b");
        assert_eq!(child_of("x/y", 0), "x");
        assert_eq!(child_of("x", 0), "x");
        assert_eq!(
            from_micros(1_500_000),
            UNIX_EPOCH + Duration::from_millis(1500)
        );
        assert!(from_micros(-1) < UNIX_EPOCH);
        assert_eq!(ttl_micros(Duration::from_nanos(1001)), 2);
        assert_eq!(ttl_micros(Duration::from_millis(200)), 200_000);
        assert!(ttl_micros(Duration::MAX) > 0);
    }
}
