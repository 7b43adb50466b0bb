//! MySQL and MariaDB statements.
//!
//! Keys, names and tokens live in `VARBINARY` columns and are bound as bytes, so every
//! comparison and `ORDER BY` is bytewise whatever the connection's character set.

use cert_core::Result;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{Row, SqlStr};

use crate::Write;
use crate::config::{Dialect, SqlConfig};
use crate::error::{corrupt, from_sqlx};
use crate::schema::{self, Tables};

fn err(e: sqlx::Error) -> cert_core::Error {
    from_sqlx(Dialect::MySql, e)
}

/// The database's clock, in UTC so the session time zone never matters.
const NOW: &str = "UTC_TIMESTAMP(6)";

/// How long a starting process waits for another one's migration, in seconds.
const MIGRATION_LOCK_WAIT_SECS: i64 = 60;

pub(crate) struct MySql {
    pool: MySqlPool,
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
    read_token: SqlStr,
    refresh: SqlStr,
    release: SqlStr,
    clean_locks: SqlStr,
    fence: SqlStr,
}

fn utf8(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let key = String::from_utf8_lossy(e.as_bytes()).into_owned();
        corrupt(&key, "stored key is not UTF-8")
    })
}

impl MySql {
    pub(crate) async fn connect(url: &str, config: &SqlConfig) -> Result<MySqlPool> {
        let options: MySqlConnectOptions = url.parse().map_err(err)?;
        MySqlPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(err)
    }

    pub(crate) fn new(pool: MySqlPool, config: &SqlConfig, tables: Tables) -> Self {
        let r = |t: &str| tables.render(&t.replace("{now}", NOW));
        let q = Queries {
            store: r(
                "INSERT INTO {kv} (ns, name, data, size, modified) VALUES (?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE data = VALUES(data), size = VALUES(size), \
                 modified = VALUES(modified)",
            ),
            load: r("SELECT data FROM {kv} WHERE ns = ? AND name = ?"),
            delete: r("DELETE FROM {kv} WHERE ns = ? AND (name = ? OR (name >= ? AND name < ?))"),
            exists: r(
                "SELECT EXISTS (SELECT 1 FROM {kv} WHERE ns = ? AND name = ?) \
                 OR EXISTS (SELECT 1 FROM {kv} WHERE ns = ? AND name >= ? AND name < ?)",
            ),
            stat_key: r("SELECT size, modified FROM {kv} WHERE ns = ? AND name = ?"),
            stat_prefix: r(
                "SELECT MAX(modified) FROM {kv} WHERE ns = ? AND name >= ? AND name < ?",
            ),
            list_range: r(
                "SELECT name FROM {kv} WHERE ns = ? AND name >= ? AND name < ? \
                 ORDER BY name LIMIT ?",
            ),
            list_open: r("SELECT name FROM {kv} WHERE ns = ? AND name >= ? ORDER BY name LIMIT ?"),
            // Assignments run left to right: `token` is decided on the old `expires`, then
            // `expires` itself. A live lease is left exactly as it was.
            acquire: r("INSERT INTO {locks} (ns, name, token, expires) \
                 VALUES (?, ?, ?, {now} + INTERVAL ? MICROSECOND) \
                 ON DUPLICATE KEY UPDATE \
                 token = IF(expires <= {now}, VALUES(token), token), \
                 expires = IF(expires <= {now}, VALUES(expires), expires)"),
            read_token: r("SELECT token FROM {locks} WHERE ns = ? AND name = ?"),
            refresh: r(
                "UPDATE {locks} SET expires = {now} + INTERVAL ? MICROSECOND \
                 WHERE ns = ? AND name = ? AND token = ? AND expires > {now}",
            ),
            release: r(
                "DELETE FROM {locks} WHERE ns = ? AND name = ? AND token = ? AND expires > {now}",
            ),
            clean_locks: r("DELETE FROM {locks} WHERE ns = ? AND expires <= {now}"),
            // A locking read sees the latest committed row, not the transaction's
            // snapshot, and holds it until the commit; a takeover updating the row waits.
            fence: r(
                "SELECT 1 FROM {locks} WHERE ns = ? AND name = ? AND token = ? \
                 AND expires > {now} FOR UPDATE",
            ),
        };
        MySql {
            pool,
            ns: config.namespace.clone(),
            tables,
            q,
        }
    }

    pub(crate) fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Creates or upgrades the tables while holding a named server lock (`GET_LOCK`,
    /// keyed by database and migrations table) on one connection. DDL commits on its own
    /// in MySQL, so the lock, not a transaction, keeps concurrent starters apart.
    pub(crate) async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(err)?;
        let lock_name = format!("certstore:{}", self.tables.migrations);
        let got: Option<i64> =
            sqlx::query_scalar("SELECT GET_LOCK(MD5(CONCAT(IFNULL(DATABASE(), ''), '.', ?)), ?)")
                .bind(&lock_name)
                .bind(MIGRATION_LOCK_WAIT_SECS)
                .fetch_one(&mut *conn)
                .await
                .map_err(err)?;
        if got != Some(1) {
            return Err(cert_core::Error::unavailable(
                "mysql",
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out waiting for another process's schema migration",
                ),
            ));
        }
        let result = self.migrate_locked(&mut conn).await;
        let released =
            sqlx::query("SELECT RELEASE_LOCK(MD5(CONCAT(IFNULL(DATABASE(), ''), '.', ?)))")
                .bind(&lock_name)
                .execute(&mut *conn)
                .await;
        if let Err(e) = released {
            // The server drops the lock with the connection; make sure it goes.
            conn.close_on_drop();
            tracing::warn!(error = %e, "releasing the migration lock failed");
        }
        result
    }

    async fn migrate_locked(&self, conn: &mut sqlx::MySqlConnection) -> Result<()> {
        sqlx::query(self.tables.render(schema::MIGRATIONS_TABLE))
            .execute(&mut *conn)
            .await
            .map_err(err)?;
        let current: Option<i64> =
            sqlx::query_scalar(self.tables.render("SELECT MAX(version) FROM {migrations}"))
                .fetch_one(&mut *conn)
                .await
                .map_err(err)?;
        let current = current.unwrap_or(0);
        if current > schema::latest(schema::MYSQL) {
            tracing::warn!(
                current,
                "the SQL schema is newer than this version of cert-sql"
            );
        }
        for migration in schema::MYSQL.iter().filter(|m| m.version > current) {
            for statement in migration.statements {
                sqlx::query(self.tables.render(statement))
                    .execute(&mut *conn)
                    .await
                    .map_err(err)?;
            }
            sqlx::query(self.tables.render(
                "INSERT INTO {migrations} (version, applied_at) \
                 VALUES (?, CAST(UNIX_TIMESTAMP() * 1000 AS SIGNED))",
            ))
            .bind(migration.version)
            .execute(&mut *conn)
            .await
            .map_err(err)?;
        }
        Ok(())
    }

    pub(crate) async fn store(&self, key: &str, value: &[u8], modified: i64) -> Result<()> {
        self.store_on(&self.pool, key, value, modified).await?;
        Ok(())
    }

    async fn store_on<'c>(
        &self,
        on: impl sqlx::mysql::MySqlExecutor<'c>,
        key: &str,
        value: &[u8],
        modified: i64,
    ) -> Result<u64> {
        let done = sqlx::query(self.q.store.clone())
            .bind(self.ns.as_bytes())
            .bind(key.as_bytes())
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
            .bind(self.ns.as_bytes())
            .bind(key.as_bytes())
            .fetch_optional(&self.pool)
            .await
            .map_err(err)
    }

    pub(crate) async fn delete(&self, key: &str, start: &str, end: &str) -> Result<u64> {
        self.delete_on(&self.pool, key, start, end).await
    }

    async fn delete_on<'c>(
        &self,
        on: impl sqlx::mysql::MySqlExecutor<'c>,
        key: &str,
        start: &str,
        end: &str,
    ) -> Result<u64> {
        let done = sqlx::query(self.q.delete.clone())
            .bind(self.ns.as_bytes())
            .bind(key.as_bytes())
            .bind(start.as_bytes())
            .bind(end.as_bytes())
            .execute(on)
            .await
            .map_err(err)?;
        Ok(done.rows_affected())
    }

    /// Runs `write` in a transaction that first locks the lease's row (`SELECT ... FOR
    /// UPDATE`), matched by token and a live expiry by the server's clock; `None`, with
    /// nothing written, when no row matches. The row stays locked until the commit, so no
    /// takeover, refresh or release can come between the check and the write.
    pub(crate) async fn fenced(
        &self,
        name: &str,
        token: &str,
        write: Write<'_>,
    ) -> Result<Option<u64>> {
        let mut tx = self.pool.begin().await.map_err(err)?;
        let held = sqlx::query(self.q.fence.clone())
            .bind(self.ns.as_bytes())
            .bind(name.as_bytes())
            .bind(token.as_bytes())
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
            .bind(self.ns.as_bytes())
            .bind(key.as_bytes())
            .bind(self.ns.as_bytes())
            .bind(start.as_bytes())
            .bind(end.as_bytes())
            .fetch_one(&self.pool)
            .await
            .map_err(err)?;
        Ok(found != 0)
    }

    pub(crate) async fn stat_key(&self, key: &str) -> Result<Option<(i64, i64)>> {
        let row = sqlx::query(self.q.stat_key.clone())
            .bind(self.ns.as_bytes())
            .bind(key.as_bytes())
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        row.map(|row| Ok((row.try_get(0).map_err(err)?, row.try_get(1).map_err(err)?)))
            .transpose()
    }

    pub(crate) async fn stat_prefix(&self, start: &str, end: &str) -> Result<Option<i64>> {
        sqlx::query_scalar(self.q.stat_prefix.clone())
            .bind(self.ns.as_bytes())
            .bind(start.as_bytes())
            .bind(end.as_bytes())
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
                .bind(self.ns.as_bytes())
                .bind(lower.as_bytes())
                .bind(end.as_bytes())
                .bind(limit),
            None => sqlx::query_scalar(self.q.list_open.clone())
                .bind(self.ns.as_bytes())
                .bind(lower.as_bytes())
                .bind(limit),
        };
        let rows: Vec<Vec<u8>> = query.fetch_all(&self.pool).await.map_err(err)?;
        rows.into_iter().map(utf8).collect()
    }

    /// The upsert takes the row only if it is absent or expired; reading the token back
    /// tells whether this caller's went in (the server reports "found rows", which
    /// cannot tell an insert from a row left alone). The token is unique, so a match
    /// means this call wrote it.
    pub(crate) async fn acquire(&self, name: &str, token: &str, ttl_micros: i64) -> Result<bool> {
        sqlx::query(self.q.acquire.clone())
            .bind(self.ns.as_bytes())
            .bind(name.as_bytes())
            .bind(token.as_bytes())
            .bind(ttl_micros)
            .execute(&self.pool)
            .await
            .map_err(err)?;
        let held: Option<Vec<u8>> = sqlx::query_scalar(self.q.read_token.clone())
            .bind(self.ns.as_bytes())
            .bind(name.as_bytes())
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        Ok(held.as_deref() == Some(token.as_bytes()))
    }

    pub(crate) async fn refresh(&self, name: &str, token: &str, ttl_micros: i64) -> Result<bool> {
        let done = sqlx::query(self.q.refresh.clone())
            .bind(ttl_micros)
            .bind(self.ns.as_bytes())
            .bind(name.as_bytes())
            .bind(token.as_bytes())
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn release(&self, name: &str, token: &str) -> Result<bool> {
        let done = sqlx::query(self.q.release.clone())
            .bind(self.ns.as_bytes())
            .bind(name.as_bytes())
            .bind(token.as_bytes())
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

impl MySql {
    /// Every lock of the namespace: name, token and microseconds left (negative once
    /// expired), by the database's clock.
    pub(crate) async fn list_locks(&self) -> Result<Vec<(String, String, i64)>> {
        let query = self.tables.render(
            "SELECT name, token, TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires) \
             FROM {locks} WHERE ns = ? ORDER BY name",
        );
        let rows = sqlx::query(query)
            .bind(self.ns.as_bytes())
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        rows.iter()
            .map(|row| {
                let name: Vec<u8> = row.try_get(0).map_err(err)?;
                let token: Vec<u8> = row.try_get(1).map_err(err)?;
                Ok((
                    String::from_utf8_lossy(&name).into_owned(),
                    String::from_utf8_lossy(&token).into_owned(),
                    row.try_get(2).map_err(err)?,
                ))
            })
            .collect()
    }

    /// Deletes the lock `name` whoever holds it.
    pub(crate) async fn force_release(&self, name: &str) -> Result<bool> {
        let query = self
            .tables
            .render("DELETE FROM {locks} WHERE ns = ? AND name = ?");
        let done = sqlx::query(query)
            .bind(self.ns.as_bytes())
            .bind(name.as_bytes())
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected() > 0)
    }
}
