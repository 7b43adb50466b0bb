//! PostgreSQL statements.

use cert_core::Result;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Row, SqlStr};

use crate::Write;
use crate::config::{Dialect, SqlConfig};
use crate::error::from_sqlx;
use crate::schema::{self, Tables};

fn err(e: sqlx::Error) -> cert_core::Error {
    from_sqlx(Dialect::Postgres, e)
}

/// The database's clock: lock expiry never depends on the clients' clocks.
const NOW: &str = "now()";

pub(crate) struct Postgres {
    pool: PgPool,
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

impl Postgres {
    pub(crate) async fn connect(url: &str, config: &SqlConfig) -> Result<PgPool> {
        let options: PgConnectOptions = url.parse().map_err(err)?;
        PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(err)
    }

    pub(crate) fn new(pool: PgPool, config: &SqlConfig, tables: Tables) -> Self {
        let r = |t: &str| tables.render(&t.replace("{now}", NOW));
        let q = Queries {
            store: r(
                "INSERT INTO {kv} (ns, name, data, size, modified) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (ns, name) DO UPDATE SET data = EXCLUDED.data, size = EXCLUDED.size, \
                 modified = EXCLUDED.modified",
            ),
            load: r("SELECT data FROM {kv} WHERE ns = $1 AND name = $2"),
            delete: r(
                "DELETE FROM {kv} WHERE ns = $1 AND (name = $2 OR (name >= $3 AND name < $4))",
            ),
            exists: r(
                "SELECT EXISTS (SELECT 1 FROM {kv} WHERE ns = $1 AND name = $2) \
                 OR EXISTS (SELECT 1 FROM {kv} WHERE ns = $1 AND name >= $3 AND name < $4)",
            ),
            stat_key: r("SELECT size, modified FROM {kv} WHERE ns = $1 AND name = $2"),
            stat_prefix: r(
                "SELECT MAX(modified) FROM {kv} WHERE ns = $1 AND name >= $2 AND name < $3",
            ),
            list_range: r(
                "SELECT name FROM {kv} WHERE ns = $1 AND name >= $2 AND name < $3 \
                 ORDER BY name LIMIT $4",
            ),
            list_open: r(
                "SELECT name FROM {kv} WHERE ns = $1 AND name >= $2 ORDER BY name LIMIT $3",
            ),
            acquire: r("INSERT INTO {locks} AS l (ns, name, token, expires) \
                 VALUES ($1, $2, $3, {now} + $4::bigint * interval '1 microsecond') \
                 ON CONFLICT (ns, name) DO UPDATE SET token = EXCLUDED.token, expires = EXCLUDED.expires \
                 WHERE l.expires <= {now} RETURNING token"),
            refresh: r(
                "UPDATE {locks} SET expires = {now} + $4::bigint * interval '1 microsecond' \
                 WHERE ns = $1 AND name = $2 AND token = $3 AND expires > {now}",
            ),
            release: r(
                "DELETE FROM {locks} WHERE ns = $1 AND name = $2 AND token = $3 AND expires > {now}",
            ),
            clean_locks: r("DELETE FROM {locks} WHERE ns = $1 AND expires <= {now}"),
            // `clock_timestamp()`, not `now()`: inside a transaction `now()` is the time the
            // transaction began, and the lease must be live when the row is locked. A
            // takeover updating the row at the same moment makes this wait, and the row is
            // then checked again as the takeover left it (no longer our token).
            fence: r(
                "SELECT 1 FROM {locks} WHERE ns = $1 AND name = $2 AND token = $3 \
                 AND expires > clock_timestamp() FOR UPDATE",
            ),
        };
        Postgres {
            pool,
            ns: config.namespace.clone(),
            tables,
            q,
        }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates or upgrades the tables in one transaction, serialized across processes by
    /// a transaction-scoped advisory lock keyed by the migrations table's name.
    pub(crate) async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(err)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("certstore:{}", self.tables.migrations))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
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
        if current > schema::latest(schema::POSTGRES) {
            tracing::warn!(
                current,
                "the SQL schema is newer than this version of cert-sql"
            );
        }
        for migration in schema::POSTGRES.iter().filter(|m| m.version > current) {
            for statement in migration.statements {
                sqlx::query(self.tables.render(statement))
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
            sqlx::query(self.tables.render(
                "INSERT INTO {migrations} (version, applied_at) \
                 VALUES ($1, (extract(epoch from now()) * 1000)::bigint)",
            ))
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
        on: impl sqlx::postgres::PgExecutor<'c>,
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
        on: impl sqlx::postgres::PgExecutor<'c>,
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

    /// Runs `write` in a transaction that first locks the lease's row, matched by token
    /// and a live expiry; `None`, with nothing written, when no row matches. The row stays
    /// locked until the commit, so no takeover, refresh or release can come between the
    /// check and the write.
    pub(crate) async fn fenced(
        &self,
        name: &str,
        token: &str,
        write: Write<'_>,
    ) -> Result<Option<u64>> {
        let mut tx = self.pool.begin().await.map_err(err)?;
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
        sqlx::query_scalar(self.q.exists.clone())
            .bind(&self.ns)
            .bind(key)
            .bind(start)
            .bind(end)
            .fetch_one(&self.pool)
            .await
            .map_err(err)
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
            .bind(ttl_micros)
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
            .bind(ttl_micros)
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

impl Postgres {
    /// Every lock of the namespace: name, token and microseconds left (negative once
    /// expired), by the database's clock.
    pub(crate) async fn list_locks(&self) -> Result<Vec<(String, String, i64)>> {
        let query = self.tables.render(
            "SELECT name, token, \
             CAST(EXTRACT(EPOCH FROM (expires - now())) * 1000000 AS bigint) \
             FROM {locks} WHERE ns = $1 ORDER BY name",
        );
        let rows = sqlx::query(query)
            .bind(&self.ns)
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(err)?,
                    row.try_get(1).map_err(err)?,
                    row.try_get(2).map_err(err)?,
                ))
            })
            .collect()
    }

    /// Deletes the lock `name` whoever holds it.
    pub(crate) async fn force_release(&self, name: &str) -> Result<bool> {
        let query = self
            .tables
            .render("DELETE FROM {locks} WHERE ns = $1 AND name = $2");
        let done = sqlx::query(query)
            .bind(&self.ns)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected() > 0)
    }
}
