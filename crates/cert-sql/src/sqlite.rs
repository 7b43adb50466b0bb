//! SQLite statements.

use std::fs::{OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cert_core::Result;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqlStr};

use crate::Write;
use crate::config::{Dialect, SqlConfig};
use crate::error::from_sqlx;
use crate::schema::{self, Tables};

fn err(e: sqlx::Error) -> cert_core::Error {
    from_sqlx(Dialect::Sqlite, e)
}

/// Milliseconds since the Unix epoch by SQLite's clock (the host's: SQLite has no server,
/// and every process sharing a database file runs on the same host).
const NOW: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) struct Sqlite {
    pool: SqlitePool,
    ns: String,
    tables: Tables,
    q: Queries,
}

struct Queries {
    store: SqlStr,
    load: SqlStr,
    delete: SqlStr,
    exists: SqlStr,
    stat_key: SqlStr,
    stat_prefix: SqlStr,
    list_range: SqlStr,
    list_open: SqlStr,
    acquire: SqlStr,
    refresh: SqlStr,
    release: SqlStr,
    clean_locks: SqlStr,
    fence: SqlStr,
}

impl Sqlite {
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

    pub(crate) fn new(pool: SqlitePool, config: &SqlConfig, tables: Tables) -> Self {
        let r = |t: &str| tables.render(&t.replace("{now}", NOW));
        let q = Queries {
            store: r(
                "INSERT INTO {kv} (ns, name, data, size, modified) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (ns, name) DO UPDATE SET data = excluded.data, size = excluded.size, \
                 modified = excluded.modified",
            ),
            load: r("SELECT data FROM {kv} WHERE ns = ?1 AND name = ?2"),
            // Two index searches; SQLite would scan the whole namespace for the `OR`.
            delete: r("DELETE FROM {kv} WHERE rowid IN (\
                 SELECT rowid FROM {kv} WHERE ns = ?1 AND name = ?2 UNION ALL \
                 SELECT rowid FROM {kv} WHERE ns = ?1 AND name >= ?3 AND name < ?4)"),
            exists: r(
                "SELECT EXISTS (SELECT 1 FROM {kv} WHERE ns = ?1 AND name = ?2) \
                 OR EXISTS (SELECT 1 FROM {kv} WHERE ns = ?1 AND name >= ?3 AND name < ?4)",
            ),
            stat_key: r("SELECT size, modified FROM {kv} WHERE ns = ?1 AND name = ?2"),
            stat_prefix: r(
                "SELECT MAX(modified) FROM {kv} WHERE ns = ?1 AND name >= ?2 AND name < ?3",
            ),
            list_range: r(
                "SELECT name FROM {kv} WHERE ns = ?1 AND name >= ?2 AND name < ?3 \
                 ORDER BY name LIMIT ?4",
            ),
            list_open: r(
                "SELECT name FROM {kv} WHERE ns = ?1 AND name >= ?2 ORDER BY name LIMIT ?3",
            ),
            acquire: r(
                "INSERT INTO {locks} (ns, name, token, expires) VALUES (?1, ?2, ?3, {now} + ?4) \
                 ON CONFLICT (ns, name) DO UPDATE SET token = excluded.token, expires = excluded.expires \
                 WHERE {locks}.expires <= {now} RETURNING token",
            ),
            refresh: r("UPDATE {locks} SET expires = {now} + ?4 \
                 WHERE ns = ?1 AND name = ?2 AND token = ?3 AND expires > {now}"),
            release: r(
                "DELETE FROM {locks} WHERE ns = ?1 AND name = ?2 AND token = ?3 AND expires > {now}",
            ),
            clean_locks: r("DELETE FROM {locks} WHERE ns = ?1 AND expires <= {now}"),
            // Run inside `BEGIN IMMEDIATE`: the database's write lock is held from the start
            // of the transaction, so no other connection changes the row until the commit.
            fence: r(
                "SELECT 1 FROM {locks} WHERE ns = ?1 AND name = ?2 AND token = ?3 \
                 AND expires > {now}",
            ),
        };
        Sqlite {
            pool,
            ns: config.namespace.clone(),
            tables,
            q,
        }
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Creates or upgrades the tables in a `BEGIN IMMEDIATE` transaction: it holds the
    /// database's write lock from the start, so concurrent starters run one after another.
    pub(crate) async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(err)?;
        sqlx::query(self.tables.render(schema::MIGRATIONS_TABLE))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        let current: Option<i64> =
            sqlx::query_scalar(self.tables.render("SELECT MAX(version) FROM {migrations}"))
                .fetch_one(&mut *tx)
                .await
                .map_err(err)?;
        let current = current.unwrap_or(0);
        if current > schema::latest(schema::SQLITE) {
            tracing::warn!(
                current,
                "the SQL schema is newer than this version of cert-sql"
            );
        }
        for migration in schema::SQLITE.iter().filter(|m| m.version > current) {
            for statement in migration.statements {
                sqlx::query(self.tables.render(statement))
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
            sqlx::query(
                self.tables.render(
                    "INSERT INTO {migrations} (version, applied_at) VALUES (?1, {now})"
                        .replace("{now}", NOW)
                        .as_str(),
                ),
            )
            .bind(migration.version)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    pub(crate) async fn store(&self, key: &str, value: &[u8], modified: i64) -> Result<()> {
        self.store_on(&self.pool, key, value, modified).await?;
        Ok(())
    }

    async fn store_on<'c>(
        &self,
        on: impl sqlx::sqlite::SqliteExecutor<'c>,
        key: &str,
        value: &[u8],
        modified: i64,
    ) -> Result<u64> {
        let done = sqlx::query(self.q.store.clone())
            .bind(&self.ns)
            .bind(key)
            .bind(value)
            .bind(i64::try_from(value.len()).unwrap_or(i64::MAX))
            .bind(modified)
            .execute(on)
            .await
            .map_err(err)?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn load(&self, key: &str) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar(self.q.load.clone())
            .bind(&self.ns)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)
    }

    pub(crate) async fn delete(&self, key: &str, start: &str, end: &str) -> Result<u64> {
        self.delete_on(&self.pool, key, start, end).await
    }

    async fn delete_on<'c>(
        &self,
        on: impl sqlx::sqlite::SqliteExecutor<'c>,
        key: &str,
        start: &str,
        end: &str,
    ) -> Result<u64> {
        let done = sqlx::query(self.q.delete.clone())
            .bind(&self.ns)
            .bind(key)
            .bind(start)
            .bind(end)
            .execute(on)
            .await
            .map_err(err)?;
        Ok(done.rows_affected())
    }

    /// Runs `write` in a `BEGIN IMMEDIATE` transaction that first checks the lease's row
    /// (token and a live expiry); `None`, with nothing written, when it does not match.
    /// The transaction holds the database's write lock from its start, so no takeover,
    /// refresh or release can come between the check and the write.
    pub(crate) async fn fenced(
        &self,
        name: &str,
        token: &str,
        write: Write<'_>,
    ) -> Result<Option<u64>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(err)?;
        let held = sqlx::query(self.q.fence.clone())
            .bind(&self.ns)
            .bind(name)
            .bind(token)
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
        if held.is_none() {
            tx.rollback().await.map_err(err)?;
            return Ok(None);
        }
        let done = match write {
            Write::Store {
                key,
                value,
                modified,
            } => self.store_on(&mut *tx, key, value, modified).await?,
            Write::Delete { key, start, end } => self.delete_on(&mut *tx, key, start, end).await?,
        };
        tx.commit().await.map_err(err)?;
        Ok(Some(done))
    }

    pub(crate) async fn exists(&self, key: &str, start: &str, end: &str) -> Result<bool> {
        let found: i64 = sqlx::query_scalar(self.q.exists.clone())
            .bind(&self.ns)
            .bind(key)
            .bind(start)
            .bind(end)
            .fetch_one(&self.pool)
            .await
            .map_err(err)?;
        Ok(found != 0)
    }

    pub(crate) async fn stat_key(&self, key: &str) -> Result<Option<(i64, i64)>> {
        let row = sqlx::query(self.q.stat_key.clone())
            .bind(&self.ns)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        row.map(|row| Ok((row.try_get(0).map_err(err)?, row.try_get(1).map_err(err)?)))
            .transpose()
    }

    pub(crate) async fn stat_prefix(&self, start: &str, end: &str) -> Result<Option<i64>> {
        sqlx::query_scalar(self.q.stat_prefix.clone())
            .bind(&self.ns)
            .bind(start)
            .bind(end)
            .fetch_one(&self.pool)
            .await
            .map_err(err)
    }

    pub(crate) async fn list_page(
        &self,
        lower: &str,
        end: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>> {
        let query = match end {
            Some(end) => sqlx::query_scalar(self.q.list_range.clone())
                .bind(&self.ns)
                .bind(lower)
                .bind(end)
                .bind(limit),
            None => sqlx::query_scalar(self.q.list_open.clone())
                .bind(&self.ns)
                .bind(lower)
                .bind(limit),
        };
        query.fetch_all(&self.pool).await.map_err(err)
    }

    pub(crate) async fn acquire(&self, name: &str, token: &str, ttl_micros: i64) -> Result<bool> {
        let got: Option<String> = sqlx::query_scalar(self.q.acquire.clone())
            .bind(&self.ns)
            .bind(name)
            .bind(token)
            .bind(ceil_millis(ttl_micros))
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        Ok(got.as_deref() == Some(token))
    }

    pub(crate) async fn refresh(&self, name: &str, token: &str, ttl_micros: i64) -> Result<bool> {
        let done = sqlx::query(self.q.refresh.clone())
            .bind(&self.ns)
            .bind(name)
            .bind(token)
            .bind(ceil_millis(ttl_micros))
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn release(&self, name: &str, token: &str) -> Result<bool> {
        let done = sqlx::query(self.q.release.clone())
            .bind(&self.ns)
            .bind(name)
            .bind(token)
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn clean_locks(&self) -> Result<usize> {
        let done = sqlx::query(self.q.clean_locks.clone())
            .bind(&self.ns)
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }
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

/// Rounds a time to live up to whole milliseconds, so the stored expiry is never earlier
/// than the caller's local deadline.
fn ceil_millis(micros: i64) -> i64 {
    micros.saturating_add(999) / 1000
}

impl Sqlite {
    /// Every lock of the namespace: name, token and microseconds left (negative once
    /// expired), by the database's clock.
    pub(crate) async fn list_locks(&self) -> Result<Vec<(String, String, i64)>> {
        let query = self.tables.render(&format!(
            "SELECT name, token, expires - {NOW} FROM {{locks}} WHERE ns = ?1 ORDER BY name"
        ));
        let rows = sqlx::query(query)
            .bind(&self.ns)
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        rows.iter()
            .map(|row| {
                let millis: i64 = row.try_get(2).map_err(err)?;
                Ok((
                    row.try_get(0).map_err(err)?,
                    row.try_get(1).map_err(err)?,
                    millis.saturating_mul(1000),
                ))
            })
            .collect()
    }

    /// Deletes the lock `name` whoever holds it.
    pub(crate) async fn force_release(&self, name: &str) -> Result<bool> {
        let query = self
            .tables
            .render("DELETE FROM {locks} WHERE ns = ?1 AND name = ?2");
        let done = sqlx::query(query)
            .bind(&self.ns)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_database_files_are_created_ahead() {
        for url in [
            "sqlite:///var/lib/certstore.db",
            "sqlite://certstore.db?mode=rwc",
            "sqlite:certstore.db?cache=shared",
        ] {
            assert!(on_disk(url), "{url}");
        }
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://?mode=memory",
            "sqlite://a.db?mode=memory&cache=private",
            "sqlite://a.db?mode=ro",
            "sqlite://a.db?immutable=1",
            "sqlite://a.db?vfs=memdb",
        ] {
            assert!(!on_disk(url), "{url}");
        }
    }

    #[test]
    fn companions_are_named_after_the_database() {
        assert_eq!(
            companions(Path::new("/d/c.db")),
            [PathBuf::from("/d/c.db-wal"), PathBuf::from("/d/c.db-shm")]
        );
        assert_eq!(
            database_files("sqlite:///d/a%20b.db?mode=rwc"),
            Some(["/d/a b.db", "/d/a b.db-wal", "/d/a b.db-shm"].map(PathBuf::from))
        );
        assert_eq!(database_files("sqlite::memory:"), None);
        assert_eq!(database_files("sqlite://a.db?vfs=memdb"), None);
        // A database opened read-only is not created, but is a file all the same.
        assert!(database_files("sqlite://a.db?mode=ro").is_some());
    }

    #[test]
    fn companions_lose_what_the_database_does_not_grant() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        create_private(&db);
        assert_eq!(
            std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let [wal, shm] = companions(&db);
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, Permissions::from_mode(0o644)).unwrap();
        restrict_companions(&db);
        assert_eq!(
            std::fs::metadata(&wal).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!shm.exists(), "a missing companion is not created");
        // An existing database file keeps its mode.
        std::fs::set_permissions(&db, Permissions::from_mode(0o640)).unwrap();
        create_private(&db);
        assert_eq!(
            std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }
}
