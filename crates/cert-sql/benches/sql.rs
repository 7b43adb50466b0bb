//! `SqlStorage` against raw sqlx queries doing the same round trips on the same pool:
//! store (upsert of 1 KiB), load, and a non-recursive listing of 100 keys, for SQLite
//! (a temporary file) and, when their URLs are set, PostgreSQL
//! (`CERTSTORE_TEST_POSTGRES_URL`) and MariaDB/MySQL (`CERTSTORE_TEST_MYSQL_URL`).
//!
//! Compare `<dialect>/<op>/certstore` with `<dialect>/<op>/raw`: the ratio is the cost
//! of key validation, the operation timeout and listing logic over the bare statement.
#![allow(missing_docs, clippy::unwrap_used)]

use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cert_core::Storage;
use cert_sql::sqlx::{self, AssertSqlSafe};
use cert_sql::{SqlConfig, SqlStorage};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;

const PREFIX: &str = "certstore_bench";
const NS: &str = "bench";
const KV: &str = "certstore_bench_kv";
const LIST_KEYS: usize = 100;

fn config() -> SqlConfig {
    SqlConfig::default()
        .with_table_prefix(PREFIX)
        .with_namespace(NS)
}

fn micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The statements a hand-written client would send, per dialect.
struct Raw {
    store: String,
    load: String,
    list: String,
}

fn raw(dialect: &str) -> Raw {
    match dialect {
        "postgres" => Raw {
            store: format!(
                "INSERT INTO {KV} (ns, name, data, size, modified) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (ns, name) DO UPDATE SET data = EXCLUDED.data, size = EXCLUDED.size, \
                 modified = EXCLUDED.modified"
            ),
            load: format!("SELECT data FROM {KV} WHERE ns = $1 AND name = $2"),
            list: format!(
                "SELECT name FROM {KV} WHERE ns = $1 AND name >= $2 AND name < $3 ORDER BY name LIMIT $4"
            ),
        },
        "mysql" => Raw {
            store: format!(
                "INSERT INTO {KV} (ns, name, data, size, modified) VALUES (?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE data = VALUES(data), size = VALUES(size), \
                 modified = VALUES(modified)"
            ),
            load: format!("SELECT data FROM {KV} WHERE ns = ? AND name = ?"),
            list: format!(
                "SELECT name FROM {KV} WHERE ns = ? AND name >= ? AND name < ? ORDER BY name LIMIT ?"
            ),
        },
        _ => Raw {
            store: format!(
                "INSERT INTO {KV} (ns, name, data, size, modified) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (ns, name) DO UPDATE SET data = excluded.data, size = excluded.size, \
                 modified = excluded.modified"
            ),
            load: format!("SELECT data FROM {KV} WHERE ns = ?1 AND name = ?2"),
            list: format!(
                "SELECT name FROM {KV} WHERE ns = ?1 AND name >= ?2 AND name < ?3 ORDER BY name LIMIT ?4"
            ),
        },
    }
}

/// Benchmarks `ours` and `raw` as `<op>/certstore` and `<op>/raw`. Every timed run of
/// one side follows an untimed run of the other, so both see the same load on a busy
/// machine and the same state of the database.
fn pair<A, FA, B, FB>(group: &mut Group<'_>, rt: &Runtime, op: &str, ours: A, raw: B)
where
    A: Fn() -> FA,
    FA: Future<Output = ()>,
    B: Fn() -> FB,
    FB: Future<Output = ()>,
{
    let (ours, raw) = (&ours, &raw);
    group.bench_function(format!("{op}/certstore"), |b| {
        b.to_async(rt).iter_custom(|iters| async move {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                raw().await;
                let started = Instant::now();
                ours().await;
                timed += started.elapsed();
            }
            timed
        })
    });
    group.bench_function(format!("{op}/raw"), |b| {
        b.to_async(rt).iter_custom(|iters| async move {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                ours().await;
                let started = Instant::now();
                raw().await;
                timed += started.elapsed();
            }
            timed
        })
    });
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// Runs the three pairs for one dialect. `$key` turns a `&'static str` into what the
/// dialect binds (MySQL binds keys as bytes, like the backend); `$name` is the type a
/// listed key decodes to.
macro_rules! dialect_benches {
    ($c:expr, $rt:expr, $dialect:expr, $storage:expr, $pool:expr, $key:expr, $name:ty) => {{
        let rt: &Runtime = $rt;
        let storage: &SqlStorage = &$storage;
        let pool = &$pool;
        let raw = raw($dialect);
        let value = vec![7u8; 1024];
        rt.block_on(async {
            let _ = storage.delete("bench").await;
            for i in 0..LIST_KEYS {
                storage
                    .store(&format!("bench/list/k{i:03}"), b"v")
                    .await
                    .unwrap();
            }
            storage.store("bench/store", &value).await.unwrap();
        });
        let mut group = $c.benchmark_group($dialect);
        pair(
            &mut group,
            rt,
            "store",
            || async { storage.store("bench/store", &value).await.unwrap() },
            || async {
                sqlx::query(AssertSqlSafe(raw.store.as_str()))
                    .bind($key(NS))
                    .bind($key("bench/store"))
                    .bind(&value[..])
                    .bind(value.len() as i64)
                    .bind(micros())
                    .execute(pool)
                    .await
                    .unwrap();
            },
        );
        pair(
            &mut group,
            rt,
            "load",
            || async {
                black_box(storage.load("bench/store").await.unwrap());
            },
            || async {
                let value: Option<Vec<u8>> = sqlx::query_scalar(AssertSqlSafe(raw.load.as_str()))
                    .bind($key(NS))
                    .bind($key("bench/store"))
                    .fetch_optional(pool)
                    .await
                    .unwrap();
                black_box(value.unwrap());
            },
        );
        pair(
            &mut group,
            rt,
            "list",
            || async {
                let keys = storage.list("bench/list", false).await.unwrap();
                assert_eq!(keys.len(), LIST_KEYS);
                black_box(keys);
            },
            || async {
                let names: Vec<$name> = sqlx::query_scalar(AssertSqlSafe(raw.list.as_str()))
                    .bind($key(NS))
                    .bind($key("bench/list/"))
                    .bind($key("bench/list0"))
                    .bind(2000i64)
                    .fetch_all(pool)
                    .await
                    .unwrap();
                assert_eq!(names.len(), LIST_KEYS);
                black_box(names);
            },
        );
        group.finish();
    }};
}

fn sqlite(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
    let options = options
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
    let pool = rt
        .block_on(
            sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options),
        )
        .unwrap();
    let storage = rt
        .block_on(SqlStorage::from_sqlite_pool(pool.clone(), config()))
        .unwrap();
    let key = |s: &'static str| s;
    dialect_benches!(c, &rt, "sqlite", storage, pool, key, String);
}

fn postgres(c: &mut Criterion) {
    let Some(url) = std::env::var("CERTSTORE_TEST_POSTGRES_URL").ok() else {
        eprintln!("SKIPPED postgres benchmarks: CERTSTORE_TEST_POSTGRES_URL is not set");
        return;
    };
    let rt = Runtime::new().unwrap();
    // Commits do not wait for the disk here: on a shared machine the WAL flush's latency
    // varies far more than the client-side work this benchmark compares.
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let options = options.options([("synchronous_commit", "off")]);
    let pool = rt
        .block_on(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(4)
                .connect_with(options),
        )
        .unwrap();
    let storage = rt
        .block_on(SqlStorage::from_postgres_pool(pool.clone(), config()))
        .unwrap();
    let key = |s: &'static str| s;
    dialect_benches!(c, &rt, "postgres", storage, pool, key, String);
}

fn mysql(c: &mut Criterion) {
    let Some(url) = std::env::var("CERTSTORE_TEST_MYSQL_URL").ok() else {
        eprintln!("SKIPPED mysql benchmarks: CERTSTORE_TEST_MYSQL_URL is not set");
        return;
    };
    let rt = Runtime::new().unwrap();
    let pool = rt
        .block_on(
            sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(4)
                .connect(&url),
        )
        .unwrap();
    let storage = rt
        .block_on(SqlStorage::from_mysql_pool(pool.clone(), config()))
        .unwrap();
    let key = |s: &'static str| s.as_bytes();
    dialect_benches!(c, &rt, "mysql", storage, pool, key, Vec<u8>);
}

criterion_group!(benches, sqlite, postgres, mysql);
criterion_main!(benches);
