//! [`SqlBackend`]: one dialect's pool, namespace and statements, and every storage, lock
//! and migration query written once over them.

use cert_core::{Error, Result};
use sqlx::query::{Query, QueryScalar};
use sqlx::{
    Arguments, ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Row,
    Type,
};

use crate::config::SqlConfig;
use crate::dialect::SqlDialect;
use crate::error::{corrupt, from_sqlx};
use crate::schema::{self, Tables};
use crate::statements::{Param, Statement, Statements};

/// A write made under a lease, run by [`SqlBackend::fenced`] in the transaction that
/// holds the lease's lock row.
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

/// One dialect's pool, namespace and rendered statements.
pub(crate) struct SqlBackend<DB: Database> {
    pool: Pool<DB>,
    ns: String,
    tables: Tables,
    q: Statements,
}

impl<DB: SqlDialect> SqlBackend<DB> {
    pub(crate) fn new(pool: Pool<DB>, config: &SqlConfig, tables: Tables) -> Self {
        SqlBackend {
            q: Statements::new(&DB::SYNTAX, &tables),
            pool,
            ns: config.namespace.clone(),
            tables,
        }
    }

    pub(crate) fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// The name of the server lock that keeps concurrent migrations of these tables apart.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub(crate) fn migration_lock_name(&self) -> String {
        format!("certstore:{}", self.tables.migrations)
    }

    fn err(e: sqlx::Error) -> Error {
        from_sqlx(DB::DIALECT, e)
    }

    fn ns(&self) -> Param<'_> {
        Param::Text(&self.ns)
    }

    /// A time to live in whole units of the stored expiry, rounded up so the stored
    /// expiry is never earlier than the caller's local deadline.
    fn expiry_units(ttl_micros: i64) -> i64 {
        let unit = DB::SYNTAX.expiry_unit_micros;
        ttl_micros.saturating_add(unit - 1) / unit
    }
}

/// The bounds below are what the queries need of a driver: an executor for a connection
/// (and so for the pool and a transaction), and encoders and decoders for the few column
/// types used. Every driver this crate speaks meets them.
impl<DB> SqlBackend<DB>
where
    DB: SqlDialect,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'r> Vec<u8>: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// The values `statement` binds, picked from `params` in its order.
    fn arguments(statement: &Statement, params: &[Param<'_>]) -> Result<DB::Arguments> {
        let mut args = <DB::Arguments as Default>::default();
        for &index in statement.binds() {
            let added = match params.get(index).copied() {
                Some(Param::Text(text)) if DB::SYNTAX.text_as_bytes => args.add(text.as_bytes()),
                Some(Param::Text(text)) => args.add(text),
                Some(Param::Bytes(bytes)) => args.add(bytes),
                Some(Param::Int(int)) => args.add(int),
                None => Err("a statement has more parameters than it was given".into()),
            };
            added.map_err(|e| Self::err(sqlx::Error::Encode(e)))?;
        }
        Ok(args)
    }

    fn query(
        statement: &Statement,
        params: &[Param<'_>],
    ) -> Result<Query<'static, DB, DB::Arguments>> {
        Ok(sqlx::query_with(
            statement.sql(),
            Self::arguments(statement, params)?,
        ))
    }

    fn scalar<O>(
        statement: &Statement,
        params: &[Param<'_>],
    ) -> Result<QueryScalar<'static, DB, O, DB::Arguments>>
    where
        (O,): for<'r> FromRow<'r, DB::Row>,
    {
        Ok(sqlx::query_scalar_with(
            statement.sql(),
            Self::arguments(statement, params)?,
        ))
    }

    /// Creates or upgrades the tables (see [`SqlDialect::migrate`]).
    pub(crate) async fn migrate(&self) -> Result<()> {
        DB::migrate(self).await
    }

    /// Creates the migrations table, then runs the migrations the database has not
    /// recorded yet and records them. The caller keeps other processes out meanwhile.
    pub(crate) async fn apply_migrations(&self, conn: &mut DB::Connection) -> Result<()> {
        Self::query(&self.q.migrations_table, &[])?
            .execute(&mut *conn)
            .await
            .map_err(Self::err)?;
        let current: Option<i64> = Self::scalar(&self.q.schema_version, &[])?
            .fetch_one(&mut *conn)
            .await
            .map_err(Self::err)?;
        let current = current.unwrap_or(0);
        let migrations = DB::SYNTAX.migrations;
        if current > schema::latest(migrations) {
            tracing::warn!(
                current,
                "the SQL schema is newer than this version of cert-sql"
            );
        }
        for migration in migrations.iter().filter(|m| m.version > current) {
            for statement in migration.statements {
                sqlx::query(self.tables.render(statement))
                    .execute(&mut *conn)
                    .await
                    .map_err(Self::err)?;
            }
            Self::query(&self.q.record_migration, &[Param::Int(migration.version)])?
                .execute(&mut *conn)
                .await
                .map_err(Self::err)?;
        }
        Ok(())
    }

    pub(crate) async fn store(&self, key: &str, value: &[u8], modified: i64) -> Result<()> {
        self.store_on(&self.pool, key, value, modified).await?;
        Ok(())
    }

    async fn store_on<'c>(
        &self,
        on: impl Executor<'c, Database = DB>,
        key: &str,
        value: &[u8],
        modified: i64,
    ) -> Result<u64> {
        let size = i64::try_from(value.len()).unwrap_or(i64::MAX);
        let params = [
            self.ns(),
            Param::Text(key),
            Param::Bytes(value),
            Param::Int(size),
            Param::Int(modified),
        ];
        let done = Self::query(&self.q.store, &params)?
            .execute(on)
            .await
            .map_err(Self::err)?;
        Ok(DB::rows_affected(&done))
    }

    pub(crate) async fn load(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Self::scalar(&self.q.load, &[self.ns(), Param::Text(key)])?
            .fetch_optional(&self.pool)
            .await
            .map_err(Self::err)
    }

    pub(crate) async fn delete(&self, key: &str, start: &str, end: &str) -> Result<u64> {
        self.delete_on(&self.pool, key, start, end).await
    }

    async fn delete_on<'c>(
        &self,
        on: impl Executor<'c, Database = DB>,
        key: &str,
        start: &str,
        end: &str,
    ) -> Result<u64> {
        let params = [
            self.ns(),
            Param::Text(key),
            Param::Text(start),
            Param::Text(end),
        ];
        let done = Self::query(&self.q.delete, &params)?
            .execute(on)
            .await
            .map_err(Self::err)?;
        Ok(DB::rows_affected(&done))
    }

    /// Runs `write` in a transaction that first checks the lease's row (token and a live
    /// expiry, by the database's clock) and keeps it from changing until the commit:
    /// `SELECT ... FOR UPDATE`, or a transaction that holds the database's write lock
    /// from its start (see [`Syntax::fence`](crate::dialect::Syntax::fence)). `None`,
    /// with nothing written, when the row does not match. No takeover, refresh or
    /// release can come between the check and the write.
    pub(crate) async fn fenced(
        &self,
        name: &str,
        token: &str,
        write: Write<'_>,
    ) -> Result<Option<u64>> {
        let mut tx = match DB::SYNTAX.begin_fenced {
            Some(begin) => self.pool.begin_with(begin).await,
            None => self.pool.begin().await,
        }
        .map_err(Self::err)?;
        let held = Self::query(
            &self.q.fence,
            &[self.ns(), Param::Text(name), Param::Text(token)],
        )?
        .fetch_optional(&mut *tx)
        .await
        .map_err(Self::err)?;
        if held.is_none() {
            tx.rollback().await.map_err(Self::err)?;
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
        tx.commit().await.map_err(Self::err)?;
        Ok(Some(done))
    }

    pub(crate) async fn exists(&self, key: &str, start: &str, end: &str) -> Result<bool> {
        let params = [
            self.ns(),
            Param::Text(key),
            Param::Text(start),
            Param::Text(end),
        ];
        let found: DB::Flag = Self::scalar(&self.q.exists, &params)?
            .fetch_one(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(Into::<i64>::into(found) != 0)
    }

    pub(crate) async fn stat_key(&self, key: &str) -> Result<Option<(i64, i64)>> {
        let row = Self::query(&self.q.stat_key, &[self.ns(), Param::Text(key)])?
            .fetch_optional(&self.pool)
            .await
            .map_err(Self::err)?;
        row.map(|row| {
            Ok((
                row.try_get(0).map_err(Self::err)?,
                row.try_get(1).map_err(Self::err)?,
            ))
        })
        .transpose()
    }

    pub(crate) async fn stat_prefix(&self, start: &str, end: &str) -> Result<Option<i64>> {
        let params = [self.ns(), Param::Text(start), Param::Text(end)];
        Self::scalar(&self.q.stat_prefix, &params)?
            .fetch_one(&self.pool)
            .await
            .map_err(Self::err)
    }

    pub(crate) async fn list_page(
        &self,
        lower: &str,
        end: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>> {
        let query = match end {
            Some(end) => Self::scalar(
                &self.q.list_range,
                &[
                    self.ns(),
                    Param::Text(lower),
                    Param::Text(end),
                    Param::Int(limit),
                ],
            )?,
            None => Self::scalar(
                &self.q.list_open,
                &[self.ns(), Param::Text(lower), Param::Int(limit)],
            )?,
        };
        let rows: Vec<DB::Text> = query.fetch_all(&self.pool).await.map_err(Self::err)?;
        rows.into_iter().map(|name| utf8(name.into())).collect()
    }

    /// Takes the lease's row if it is absent or expired. Where the statement cannot
    /// return the row's token, the upsert is followed by reading the token back (the
    /// server reports "found rows", which cannot tell an insert from a row left alone).
    /// The token is unique, so a match means this call wrote it.
    pub(crate) async fn acquire(&self, name: &str, token: &str, ttl_micros: i64) -> Result<bool> {
        let params = [
            self.ns(),
            Param::Text(name),
            Param::Text(token),
            Param::Int(Self::expiry_units(ttl_micros)),
        ];
        let held: Option<DB::Text> = match &self.q.read_token {
            None => Self::scalar(&self.q.acquire, &params)?
                .fetch_optional(&self.pool)
                .await
                .map_err(Self::err)?,
            Some(read_token) => {
                Self::query(&self.q.acquire, &params)?
                    .execute(&self.pool)
                    .await
                    .map_err(Self::err)?;
                Self::scalar(read_token, &params[..2])?
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::err)?
            }
        };
        Ok(held.map(Into::<Vec<u8>>::into).as_deref() == Some(token.as_bytes()))
    }

    pub(crate) async fn refresh(&self, name: &str, token: &str, ttl_micros: i64) -> Result<bool> {
        let params = [
            self.ns(),
            Param::Text(name),
            Param::Text(token),
            Param::Int(Self::expiry_units(ttl_micros)),
        ];
        let done = Self::query(&self.q.refresh, &params)?
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(DB::rows_affected(&done) > 0)
    }

    pub(crate) async fn release(&self, name: &str, token: &str) -> Result<bool> {
        let params = [self.ns(), Param::Text(name), Param::Text(token)];
        let done = Self::query(&self.q.release, &params)?
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(DB::rows_affected(&done) > 0)
    }

    pub(crate) async fn clean_locks(&self) -> Result<usize> {
        let done = Self::query(&self.q.clean_locks, &[self.ns()])?
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(usize::try_from(DB::rows_affected(&done)).unwrap_or(usize::MAX))
    }

    /// Every lock of the namespace: name, token and microseconds left (negative once
    /// expired), by the database's clock.
    pub(crate) async fn list_locks(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = Self::query(&self.q.list_locks, &[self.ns()])?
            .fetch_all(&self.pool)
            .await
            .map_err(Self::err)?;
        rows.iter()
            .map(|row| {
                let name: DB::Text = row.try_get(0).map_err(Self::err)?;
                let token: DB::Text = row.try_get(1).map_err(Self::err)?;
                let left: i64 = row.try_get(2).map_err(Self::err)?;
                Ok((
                    lossy(name.into()),
                    lossy(token.into()),
                    left.saturating_mul(DB::SYNTAX.expiry_unit_micros),
                ))
            })
            .collect()
    }

    /// Deletes the lock `name` whoever holds it.
    pub(crate) async fn force_release(&self, name: &str) -> Result<bool> {
        let done = Self::query(&self.q.force_release, &[self.ns(), Param::Text(name)])?
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(DB::rows_affected(&done) > 0)
    }
}

/// A stored key, which must be UTF-8.
fn utf8(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let key = String::from_utf8_lossy(e.as_bytes()).into_owned();
        corrupt(&key, "stored key is not UTF-8")
    })
}

/// A stored name or token for display, whatever its bytes.
fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
