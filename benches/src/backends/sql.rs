//! The SQL side of the `backends` suite: [`SqlStorage`] on PostgreSQL and SQLite against
//! hand-written statements on the same pool and tables.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cert_core::{LockToken, Locker, Storage};
use cert_sql::sqlx::{self, AssertSqlSafe};
use cert_sql::{SqlConfig, SqlStorage};

use super::{LIST_KEYS, OpResult, VALUE_LEN, check_len, pair};
use crate::{BoxResult, fixtures};

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The statements a hand-written client of the same tables sends, per dialect.
struct RawSql {
    store: String,
    load: String,
    list: String,
    acquire: String,
    release: String,
}

fn raw_sql(dialect: &str) -> RawSql {
    let kv = cert_sql::DEFAULT_KV_TABLE;
    let locks = cert_sql::DEFAULT_LOCK_TABLE;
    if dialect == "postgres" {
        RawSql {
            store: format!(
                "INSERT INTO {kv} (ns, name, data, size, modified) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (ns, name) DO UPDATE SET data = EXCLUDED.data, size = EXCLUDED.size, \
                 modified = EXCLUDED.modified"
            ),
            load: format!("SELECT data FROM {kv} WHERE ns = $1 AND name = $2"),
            list: format!(
                "SELECT name FROM {kv} WHERE ns = $1 AND name >= $2 AND name < $3 ORDER BY name LIMIT $4"
            ),
            acquire: format!(
                "INSERT INTO {locks} AS l (ns, name, token, expires) \
                 VALUES ($1, $2, $3, now() + $4::bigint * interval '1 microsecond') \
                 ON CONFLICT (ns, name) DO UPDATE SET token = EXCLUDED.token, expires = EXCLUDED.expires \
                 WHERE l.expires <= now() RETURNING token"
            ),
            release: format!(
                "DELETE FROM {locks} WHERE ns = $1 AND name = $2 AND token = $3 AND expires > now()"
            ),
        }
    } else {
        let now = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
        RawSql {
            store: format!(
                "INSERT INTO {kv} (ns, name, data, size, modified) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (ns, name) DO UPDATE SET data = excluded.data, size = excluded.size, \
                 modified = excluded.modified"
            ),
            load: format!("SELECT data FROM {kv} WHERE ns = ?1 AND name = ?2"),
            list: format!(
                "SELECT name FROM {kv} WHERE ns = ?1 AND name >= ?2 AND name < ?3 ORDER BY name LIMIT ?4"
            ),
            acquire: format!(
                "INSERT INTO {locks} (ns, name, token, expires) VALUES (?1, ?2, ?3, {now} + ?4) \
                 ON CONFLICT (ns, name) DO UPDATE SET token = excluded.token, expires = excluded.expires \
                 WHERE {locks}.expires <= {now} RETURNING token"
            ),
            release: format!(
                "DELETE FROM {locks} WHERE ns = ?1 AND name = ?2 AND token = ?3 AND expires > {now}"
            ),
        }
    }
}

/// Store, load, list and lock for one SQL dialect, ours and raw on the same pool and
/// tables (the raw side in its own namespace).
macro_rules! sql_suite {
    ($dialect:expr, $pool:expr, $storage:expr, $raw_ns:expr, $samples:expr, $out:expr, $ttl:expr) => {{
        let dialect: &str = $dialect;
        let pool = &$pool;
        let storage: &SqlStorage = &$storage;
        let raw_ns: &str = $raw_ns;
        let samples: usize = $samples;
        let raw = raw_sql(dialect);
        let value = vec![7u8; VALUE_LEN];
        storage.store("bench/value", &value).await?;
        for i in 0..LIST_KEYS {
            let key = format!("list/k{i:03}");
            storage.store(&key, b"v").await?;
            sqlx::query(AssertSqlSafe(raw.store.clone()))
                .bind(raw_ns)
                .bind(&key)
                .bind(&b"v"[..])
                .bind(1i64)
                .bind(now_micros())
                .execute(pool)
                .await?;
        }
        $out.push(
            pair(
                dialect,
                "store_overwrite_4k",
                "the same upsert",
                samples,
                |_| async { Ok(storage.store("bench/value", &value).await?) },
                |_| async {
                    sqlx::query(AssertSqlSafe(raw.store.clone()))
                        .bind(raw_ns)
                        .bind("bench/value")
                        .bind(&value[..])
                        .bind(value.len() as i64)
                        .bind(now_micros())
                        .execute(pool)
                        .await?;
                    Ok(())
                },
            )
            .await?,
        );
        $out.push(
            pair(
                dialect,
                "load_4k",
                "the same select",
                samples,
                |_| async {
                    storage.load("bench/value").await?;
                    Ok(())
                },
                |_| async {
                    let found: Option<Vec<u8>> =
                        sqlx::query_scalar(AssertSqlSafe(raw.load.clone()))
                            .bind(raw_ns)
                            .bind("bench/value")
                            .fetch_optional(pool)
                            .await?;
                    found.ok_or("raw value missing")?;
                    Ok(())
                },
            )
            .await?,
        );
        $out.push(
            pair(
                dialect,
                "list_100",
                "one range select",
                samples,
                |_| async { check_len(storage.list("list", true).await?.len(), LIST_KEYS) },
                |_| async {
                    let names: Vec<String> = sqlx::query_scalar(AssertSqlSafe(raw.list.clone()))
                        .bind(raw_ns)
                        .bind("list/")
                        .bind("list0")
                        .bind(2000i64)
                        .fetch_all(pool)
                        .await?;
                    check_len(names.len(), LIST_KEYS)
                },
            )
            .await?,
        );
        $out.push(
            pair(
                dialect,
                "lock_acquire_release",
                "the same upsert + delete",
                samples,
                |_| async {
                    let lease = storage
                        .try_acquire("bench/lock", Duration::from_secs(30))
                        .await?
                        .ok_or("lock held")?;
                    storage.release(&lease).await?;
                    Ok(())
                },
                |_| async {
                    let token = LockToken::generate();
                    let got: Option<String> =
                        sqlx::query_scalar(AssertSqlSafe(raw.acquire.clone()))
                            .bind(raw_ns)
                            .bind("bench/lock")
                            .bind(token.as_str())
                            .bind($ttl)
                            .fetch_optional(pool)
                            .await?;
                    got.ok_or("raw lock held")?;
                    let done = sqlx::query(AssertSqlSafe(raw.release.clone()))
                        .bind(raw_ns)
                        .bind("bench/lock")
                        .bind(token.as_str())
                        .execute(pool)
                        .await?;
                    check_len(done.rows_affected() as usize, 1)
                },
            )
            .await?,
        );
        for prefix in ["bench", "list"] {
            let _ = storage.delete(prefix).await;
        }
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {} WHERE ns = {}",
            cert_sql::DEFAULT_KV_TABLE,
            if dialect == "postgres" { "$1" } else { "?1" }
        )))
        .bind(raw_ns)
        .execute(pool)
        .await?;
    }};
}

pub(super) async fn postgres_suite(
    url: &str,
    samples: usize,
    out: &mut Vec<OpResult>,
) -> BoxResult<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await?;
    let ns = fixtures::unique_namespace("hbench");
    let storage =
        SqlStorage::from_postgres_pool(pool.clone(), SqlConfig::default().with_namespace(&ns))
            .await?;
    let raw_ns = format!("{ns}_raw");
    sql_suite!(
        "postgres",
        pool,
        storage,
        &raw_ns,
        samples,
        out,
        30_000_000i64
    );
    Ok(())
}

pub(super) async fn sqlite_suite(samples: usize, out: &mut Vec<OpResult>) -> BoxResult<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let storage = SqlStorage::connect(&url).await?;
    // A second pool on the same file for the raw side, opened after the storage set the
    // file up, with the storage's settings (WAL, `synchronous = NORMAL`).
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
    let options = options
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    let raw_ns = "hbench_raw";
    sql_suite!("sqlite", pool, storage, raw_ns, samples, out, 30_000i64);
    Ok(())
}
