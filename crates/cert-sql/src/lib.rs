//! SQL storage and locks for certstore: PostgreSQL, MySQL/MariaDB and SQLite behind one
//! type, [`SqlStorage`], implementing [`Storage`](cert_core::Storage) and
//! [`Locker`](cert_core::Locker).
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
//!   (or the pool it is given) names. One public type keeps configuration and callers
//!   dialect-agnostic (a URL picks the database at run time), while each database gets
//!   its native types and atomic upserts, which sqlx's type-erased `Any` driver cannot
//!   express. Each dialect is behind the cargo feature of the same name (`postgres`,
//!   `mysql`, `sqlite`; all on by default).
//! - **One implementation.** Every query, fenced writes and the migration steps
//!   included, is written once, in a private `SqlBackend<DB>` generic over sqlx's
//!   `Database` (its `Pool<DB>`, transactions and executors). A private `SqlDialect`
//!   trait, implemented for sqlx's `Postgres`, `MySql` and `Sqlite`, supplies only what
//!   differs: placeholders (`$1`, `?1`, `?`), the upsert clause, the lock acquisition
//!   statement (and whether it can return the token), the current-time expression and
//!   the unit lock expiry counts in, how a fenced write keeps the lock row from changing
//!   (`SELECT ... FOR UPDATE`, `BEGIN IMMEDIATE`), whether keys are bound as bytes, and
//!   how concurrent migrations are kept apart. Statements are templates written once
//!   and rendered into the dialect's SQL when a storage is built. Errors are classified
//!   per dialect in one function. Generics rather than macros: the bounds sqlx needs (an
//!   executor for a connection, encoders and decoders for the few column types) are
//!   spelled out once, on one `impl` block, and the code under them is ordinary Rust
//!   that rustfmt formats and the compiler checks as written; a macro body expanded per
//!   dialect is neither, and its errors point into the expansion.
//! - **Schema.** Two tables, `certstore_kv` and `certstore_locks` by default (see
//!   [`SqlConfig`] for renaming them), created and upgraded by embedded versioned
//!   migrations recorded in `<kv table>_migrations`; see the `schema` module docs for
//!   columns and the cross-process migration lock. Table names are the only text ever
//!   spliced into SQL, and they must be plain identifiers; keys, values, names and
//!   tokens are always bound parameters.
//! - **Ordering and prefixes.** Keys are stored with bytewise collation, so `ORDER BY`
//!   matches the storage contract. Listing and recursive deletion select the key range
//!   `[prefix/, prefix0)` ([`range_start`](cert_core::range_start),
//!   [`range_end`](cert_core::range_end)), never `LIKE`, so `%` and `_` in keys are
//!   harmless. Listing pages through the range with keyset pagination
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

/// Runs `$body` with `$b` bound to the dialect's [`SqlBackend`].
macro_rules! on_backend {
    ($self:expr, $b:ident => $body:expr) => {
        match &$self.backend {
            #[cfg(feature = "postgres")]
            $crate::Backend::Postgres($b) => $body,
            #[cfg(feature = "mysql")]
            $crate::Backend::MySql($b) => $body,
            #[cfg(feature = "sqlite")]
            $crate::Backend::Sqlite($b) => $body,
        }
    };
}

mod backend;
mod config;
mod dialect;
mod error;
mod lock;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
pub mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;
mod statements;
mod storage;

use std::fmt;
use std::future::Future;

use cert_core::{Error, Result};

use backend::SqlBackend;
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

/// A [`Storage`](cert_core::Storage) and [`Locker`](cert_core::Locker) in a PostgreSQL,
/// MySQL/MariaDB or SQLite database.
///
/// Cheap to share behind an `Arc`; every call takes a connection from the pool for the
/// duration of one statement (two for a MySQL lock acquisition).
pub struct SqlStorage {
    backend: Backend,
    config: SqlConfig,
}

enum Backend {
    #[cfg(feature = "postgres")]
    Postgres(SqlBackend<sqlx::Postgres>),
    #[cfg(feature = "mysql")]
    MySql(SqlBackend<sqlx::MySql>),
    #[cfg(feature = "sqlite")]
    Sqlite(SqlBackend<sqlx::Sqlite>),
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
                let pool = postgres::connect(url, &config).await?;
                Backend::Postgres(SqlBackend::new(pool, &config, tables))
            }
            #[cfg(feature = "mysql")]
            Dialect::MySql => {
                let pool = mysql::connect(&url.replacen("mariadb:", "mysql:", 1), &config).await?;
                Backend::MySql(SqlBackend::new(pool, &config, tables))
            }
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => {
                let pool = sqlite::connect(url, &config).await?;
                Backend::Sqlite(SqlBackend::new(pool, &config, tables))
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
            Backend::Postgres(SqlBackend::new(pool, &config, tables)),
            config,
        )
        .await
    }

    /// A storage over an existing MySQL or MariaDB pool (its own size and timeouts apply).
    #[cfg(feature = "mysql")]
    pub async fn from_mysql_pool(pool: sqlx::MySqlPool, config: SqlConfig) -> Result<Self> {
        let tables = tables(&config, Dialect::MySql)?;
        Self::finish(
            Backend::MySql(SqlBackend::new(pool, &config, tables)),
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
            Backend::Sqlite(SqlBackend::new(pool, &config, tables)),
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
}
