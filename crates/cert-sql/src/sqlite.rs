//! SQLite statements.

use std::time::Duration;

use cert_core::Result;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqlStr};

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
}

impl Sqlite {
    /// Opens (creating it if missing) the database file in WAL mode, so readers never
    /// wait for the writer, with a generous busy timeout for writers of other processes.
    /// `synchronous = NORMAL`, the setting SQLite recommends with WAL: a crash of the
    /// process loses nothing committed, a power loss may lose the last commits but never
    /// corrupts the database.
    pub(crate) async fn connect(url: &str, config: &SqlConfig) -> Result<SqlitePool> {
        let options: SqliteConnectOptions = url.parse().map_err(err)?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(err)
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
        sqlx::query(self.q.store.clone())
            .bind(&self.ns)
            .bind(key)
            .bind(value)
            .bind(i64::try_from(value.len()).unwrap_or(i64::MAX))
            .bind(modified)
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(())
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
        let done = sqlx::query(self.q.delete.clone())
            .bind(&self.ns)
            .bind(key)
            .bind(start)
            .bind(end)
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected())
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
