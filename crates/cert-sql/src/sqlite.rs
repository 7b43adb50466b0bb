//! SQLite: its [`Syntax`], migrating in a `BEGIN IMMEDIATE` transaction, and opening
//! database files (WAL mode, created private, companions kept as private as the file).

use std::fs::{OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cert_core::Result;
use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};

use crate::backend::SqlBackend;
use crate::config::{Dialect, SqlConfig};
use crate::dialect::{SqlDialect, Syntax};
use crate::error::from_sqlx;
use crate::schema;

fn err(e: sqlx::Error) -> cert_core::Error {
    from_sqlx(Dialect::Sqlite, e)
}

/// Milliseconds since the Unix epoch by SQLite's clock (the host's: SQLite has no server,
/// and every process sharing a database file runs on the same host).
const NOW: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(20);

/// Begins a transaction that holds the database's write lock from its start.
const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";

impl SqlDialect for Sqlite {
    const DIALECT: Dialect = Dialect::Sqlite;
    const SYNTAX: Syntax = Syntax {
        placeholder: "?",
        numbered: true,
        text_as_bytes: false,
        now: NOW,
        // Lock expiry is in milliseconds, like `NOW`.
        expiry_unit_micros: 1000,
        expires_in: "{now} + {4}",
        time_left: "expires - {now}",
        now_millis: "{now}",
        upsert: "ON CONFLICT (ns, name) DO UPDATE SET data = excluded.data, \
                 size = excluded.size, modified = excluded.modified",
        // Two index searches; SQLite would scan the whole namespace for the `OR`.
        delete: "DELETE FROM {kv} WHERE rowid IN (\
                 SELECT rowid FROM {kv} WHERE ns = {1} AND name = {2} UNION ALL \
                 SELECT rowid FROM {kv} WHERE ns = {1} AND name >= {3} AND name < {4})",
        acquire: "INSERT INTO {locks} (ns, name, token, expires) \
                  VALUES ({1}, {2}, {3}, {expires_in}) \
                  ON CONFLICT (ns, name) DO UPDATE SET token = excluded.token, \
                  expires = excluded.expires WHERE {locks}.expires <= {now} RETURNING token",
        acquire_returns_token: true,
        // Run inside `BEGIN IMMEDIATE`: the database's write lock is held from the start
        // of the transaction, so no other connection changes the row until the commit.
        fence: "SELECT 1 FROM {locks} WHERE ns = {1} AND name = {2} AND token = {3} \
                AND expires > {now}",
        begin_fenced: Some(BEGIN_IMMEDIATE),
        migrations: schema::SQLITE,
    };
    type Text = String;
    type Flag = i64;

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    /// Creates or upgrades the tables in a `BEGIN IMMEDIATE` transaction: it holds the
    /// database's write lock from the start, so concurrent starters run one after another.
    async fn migrate(backend: &SqlBackend<Self>) -> Result<()> {
        let mut tx = backend
            .pool()
            .begin_with(BEGIN_IMMEDIATE)
            .await
            .map_err(err)?;
        backend.apply_migrations(&mut tx).await?;
        tx.commit().await.map_err(err)
    }
}

/// Opens (creating it if missing) the database file in WAL mode, so readers never
/// wait for the writer, with a generous busy timeout for writers of other processes.
/// `synchronous = NORMAL`, the setting SQLite recommends with WAL: a crash of the
/// process loses nothing committed, a power loss may lose the last commits but never
/// corrupts the database.
///
/// The database holds private keys, so a database file created here is created with
/// mode 0600 (see [`create_private`]); SQLite gives its `-wal` and `-shm` files the
/// database file's mode, and [`restrict_companions`] makes sure of it.
pub(crate) async fn connect(url: &str, config: &SqlConfig) -> Result<SqlitePool> {
    let options: SqliteConnectOptions = url.parse().map_err(err)?;
    let file = on_disk(url).then(|| options.get_filename().to_owned());
    if let Some(path) = &file {
        // SQLite's own error for this ("unable to open database file") reads like an
        // outage; a missing directory is a configuration mistake, said as such.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(cert_core::Error::backend(
                "sqlite",
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "cannot create the database {}: the directory {} does not exist",
                        path.display(),
                        dir.display()
                    ),
                ),
            ));
        }
        create_private(path);
    }
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = SqlitePoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(err)?;
    if let Some(path) = &file {
        restrict_companions(path);
    }
    Ok(pool)
}

/// Whether a `sqlite:` URL names a plain database file: not an in-memory database
/// (`:memory:`, `mode=memory`), not a temporary one (no name), and not one behind a
/// custom VFS, which may not be a file at all. Parsed the way sqlx parses it.
fn plain_file(url: &str) -> bool {
    let (database, params) = split_url(url);
    !database.is_empty()
        && database != ":memory:"
        && !params_match(params, |key, value| {
            matches!((key, value), ("mode", "memory") | ("vfs", _))
        })
}

/// Whether a `sqlite:` URL names a plain database file that this crate may create: not
/// one opened read-only or immutable.
fn on_disk(url: &str) -> bool {
    plain_file(url)
        && !params_match(split_url(url).1, |key, value| {
            matches!((key, value), ("mode", "ro") | ("immutable", "true" | "1"))
        })
}

/// The database part and the query of a `sqlite:` URL.
fn split_url(url: &str) -> (&str, &str) {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    rest.split_once('?').unwrap_or((rest, ""))
}

/// Whether any `key=value` pair of `query` passes `test`.
fn params_match(query: &str, test: impl Fn(&str, &str) -> bool) -> bool {
    query.split('&').any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        test(key, value)
    })
}

/// The files of the SQLite database a `sqlite:` URL names, as SQLite opens them: the
/// database file, then its `-wal` and `-shm` companions (which exist only while the
/// database is in use, or after a crash). `None` for a database that is no plain file
/// (in memory, behind a custom VFS) and for a URL that does not parse.
pub fn database_files(url: &str) -> Option<[PathBuf; 3]> {
    if !plain_file(url) {
        return None;
    }
    let options: SqliteConnectOptions = url.parse().ok()?;
    let path = options.get_filename().to_owned();
    let [wal, shm] = companions(&path);
    Some([path, wal, shm])
}

/// Creates the database file at `path`, empty (which SQLite takes for a new database)
/// and with mode 0600, unless it exists. SQLite would create it with 0644 less the
/// umask: readable by every local user on most systems, while it holds private keys.
/// The parent directory is neither created nor changed. A failure is left for SQLite
/// to report when it opens the file.
fn create_private(path: &Path) {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => tracing::debug!(path = %path.display(), "created the SQLite database file"),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => tracing::debug!(
            path = %path.display(),
            error = %e,
            "could not create the SQLite database file ahead of SQLite"
        ),
    }
}

/// The paths of the files SQLite keeps next to the database at `path` in WAL mode.
fn companions(path: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// Takes from the `-wal` and `-shm` files any permission the database file itself does
/// not grant. SQLite creates them with the database file's mode already, whatever the
/// process's umask; this covers files left by an older process or another tool. A
/// database file an operator opened up on purpose keeps companions as open as itself.
fn restrict_companions(path: &Path) {
    let Ok(database) = std::fs::metadata(path) else {
        return;
    };
    let allowed = database.permissions().mode() & 0o777;
    for companion in companions(path) {
        let Ok(meta) = std::fs::symlink_metadata(&companion) else {
            continue; // not created (yet): SQLite will give it the database's mode
        };
        let mode = meta.permissions().mode() & 0o777;
        if !meta.is_file() || mode & !allowed == 0 {
            continue;
        }
        match std::fs::set_permissions(&companion, Permissions::from_mode(mode & allowed)) {
            Ok(()) => tracing::info!(
                path = %companion.display(),
                mode = format_args!("{:o}", mode & allowed),
                "restricted the permissions of a SQLite file to the database file's"
            ),
            Err(e) => tracing::warn!(
                path = %companion.display(),
                error = %e,
                "could not restrict the permissions of a SQLite file"
            ),
        }
    }
}

#[cfg(test)]
mod tests;
