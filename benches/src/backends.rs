//! Suite `backends`: per-operation latency (p50 and p99) of each network or database
//! backend against its raw client doing the same job on the same server, in the same
//! run, for what the crates' criterion benchmarks do not cover: percentiles (criterion
//! reports means), the Redis store of a new key next to the two-round-trip path it
//! replaced, and lock acquire + release on the SQL backends.
//!
//! Every sample times one call. Calls alternate ours / raw, so both sides see the same
//! machine load and server state.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cert_core::{LockToken, Locker, Storage};
use cert_redis::RedisStorage;
use cert_sql::sqlx::{self, AssertSqlSafe};
use cert_sql::{SqlConfig, SqlStorage};
use redis::Script;
use redis::aio::MultiplexedConnection;
use serde::Serialize;

use crate::stats::{Latency, micros, ratio};
use crate::{BoxResult, Options, fixtures};

/// One operation of one backend, ours against the raw client.
#[derive(Debug, Serialize)]
pub struct OpResult {
    /// The backend.
    pub backend: String,
    /// The operation.
    pub op: String,
    /// What the raw side does.
    pub baseline: String,
    /// Samples per side.
    pub samples: usize,
    /// Our latency, microseconds.
    pub ours_us: Latency,
    /// The raw client's latency, microseconds.
    pub raw_us: Latency,
    /// ours p50 / raw p50.
    pub p50_ratio: f64,
    /// ours p99 / raw p99.
    pub p99_ratio: f64,
}

/// The suite's results.
#[derive(Debug, Serialize)]
pub struct BackendResults {
    /// Every operation measured.
    pub ops: Vec<OpResult>,
    /// Backends skipped, with the reason.
    pub skipped: Vec<(String, String)>,
}

const VALUE_LEN: usize = 4096;
const LIST_KEYS: usize = 100;

/// Times `samples` calls of `ours` and of `raw`, alternating (index `i` passed to both),
/// after `samples / 10` untimed calls of each.
async fn pair<A, FA, B, FB>(
    backend: &str,
    op: &str,
    baseline: &str,
    samples: usize,
    mut ours: A,
    mut raw: B,
) -> BoxResult<OpResult>
where
    A: FnMut(usize) -> FA,
    FA: Future<Output = BoxResult<()>>,
    B: FnMut(usize) -> FB,
    FB: Future<Output = BoxResult<()>>,
{
    let warmup = samples / 10;
    let mut ours_us = Vec::with_capacity(samples);
    let mut raw_us = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let first_ours = i % 2 == 0;
        let mut time_ours = Duration::ZERO;
        let mut time_raw = Duration::ZERO;
        for side in 0..2 {
            if (side == 0) == first_ours {
                let started = Instant::now();
                ours(i).await?;
                time_ours = started.elapsed();
            } else {
                let started = Instant::now();
                raw(i).await?;
                time_raw = started.elapsed();
            }
        }
        if i >= warmup {
            ours_us.push(micros(time_ours));
            raw_us.push(micros(time_raw));
        }
    }
    let (ours_us, raw_us) = (Latency::of(&ours_us), Latency::of(&raw_us));
    let result = OpResult {
        backend: backend.to_owned(),
        op: op.to_owned(),
        baseline: baseline.to_owned(),
        samples,
        p50_ratio: ratio(ours_us.p50, raw_us.p50),
        p99_ratio: ratio(ours_us.p99, raw_us.p99),
        ours_us,
        raw_us,
    };
    eprintln!(
        "{backend:>8} {op:<24} ours p50 {:>7.1} us p99 {:>7.1} us | raw p50 {:>7.1} us p99 {:>7.1} us | {:.2}x / {:.2}x",
        result.ours_us.p50,
        result.ours_us.p99,
        result.raw_us.p50,
        result.raw_us.p99,
        result.p50_ratio,
        result.p99_ratio
    );
    Ok(result)
}

/// What the Redis store did before it became one script: `SET ... XX` (which misses on a
/// new key), then a script creating the record and its index entry.
const CREATE: &str = r"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return 1
";

/// The compare-and-delete a raw Redis client releases a lock with.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

async fn redis_suite(url: &str, samples: usize, out: &mut Vec<OpResult>) -> BoxResult<()> {
    let ns = fixtures::unique_namespace("hbench");
    let ours = RedisStorage::connect(url, &ns).await?;
    let raw: MultiplexedConnection = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let raw_key = |name: &str| format!("{{{ns}}}:raw:{name}");
    let value = vec![0xA5u8; VALUE_LEN];
    let create = Script::new(CREATE);
    let release = Script::new(RELEASE);

    ours.store("bench/value", &value).await?;
    out.push(
        pair(
            "redis",
            "store_overwrite_4k",
            "SET",
            samples,
            |_| async { Ok(ours.store("bench/value", &value).await?) },
            |_| {
                let mut raw = raw.clone();
                let key = raw_key("value");
                let value = &value;
                async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(value)
                        .query_async::<()>(&mut raw)
                        .await?;
                    Ok(())
                }
            },
        )
        .await?,
    );
    out.push(
        pair(
            "redis",
            "store_new_key_4k",
            "SET of a new key",
            samples,
            |i| {
                let key = format!("bench/new/k{i}");
                let ours = &ours;
                let value = &value;
                async move { Ok(ours.store(&key, value).await?) }
            },
            |i| {
                let mut raw = raw.clone();
                let key = raw_key(&format!("new/k{i}"));
                let value = &value;
                async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(value)
                        .query_async::<()>(&mut raw)
                        .await?;
                    Ok(())
                }
            },
        )
        .await?,
    );
    // The path `store` took for a new key before it became one script, replayed with the
    // raw client on keys of the same namespace, against the same baseline.
    let index = format!("{{{ns}}}:index");
    out.push(
        pair(
            "redis",
            "two_round_trip_new_key_4k",
            "SET of a new key",
            samples,
            |i| {
                let mut raw = raw.clone();
                let storage_key = format!("old/k{i}");
                let name = format!("{{{ns}}}:v:{storage_key}");
                let index = &index;
                let create = &create;
                let value = &value;
                async move {
                    let replaced: Option<()> = redis::cmd("SET")
                        .arg(&name)
                        .arg(value)
                        .arg("XX")
                        .query_async(&mut raw)
                        .await?;
                    if replaced.is_none() {
                        create
                            .key(&name)
                            .key(index)
                            .arg(value)
                            .arg(&storage_key)
                            .invoke_async::<()>(&mut raw)
                            .await?;
                    }
                    Ok(())
                }
            },
            |i| {
                let mut raw = raw.clone();
                let key = raw_key(&format!("new2/k{i}"));
                let value = &value;
                async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(value)
                        .query_async::<()>(&mut raw)
                        .await?;
                    Ok(())
                }
            },
        )
        .await?,
    );
    out.push(
        pair(
            "redis",
            "load_4k",
            "GET",
            samples,
            |_| async {
                ours.load("bench/value").await?;
                Ok(())
            },
            |_| {
                let mut raw = raw.clone();
                let key = raw_key("value");
                async move {
                    let _: Vec<u8> = redis::cmd("GET").arg(key).query_async(&mut raw).await?;
                    Ok(())
                }
            },
        )
        .await?,
    );
    let raw_index = raw_key("index");
    {
        let mut raw = raw.clone();
        for i in 0..LIST_KEYS {
            let key = format!("list/k{i:03}");
            ours.store(&key, b"v").await?;
            redis::cmd("ZADD")
                .arg(&raw_index)
                .arg(0)
                .arg(&key)
                .query_async::<()>(&mut raw)
                .await?;
        }
    }
    out.push(
        pair(
            "redis",
            "list_100",
            "ZRANGEBYLEX",
            samples,
            |_| async {
                let keys = ours.list("list", true).await?;
                check_len(keys.len(), LIST_KEYS)
            },
            |_| {
                let mut raw = raw.clone();
                let index = raw_index.clone();
                async move {
                    let keys: Vec<String> = redis::cmd("ZRANGEBYLEX")
                        .arg(index)
                        .arg("[list/")
                        .arg("(list0")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(5000)
                        .query_async(&mut raw)
                        .await?;
                    check_len(keys.len(), LIST_KEYS)
                }
            },
        )
        .await?,
    );
    out.push(
        pair(
            "redis",
            "lock_acquire_release",
            "SET NX PX + compare-and-delete script",
            samples,
            |_| async {
                let lease = ours
                    .try_acquire("bench/lock", Duration::from_secs(30))
                    .await?
                    .ok_or("lock held")?;
                ours.release(&lease).await?;
                Ok(())
            },
            |_| {
                let mut raw = raw.clone();
                let key = raw_key("lock");
                let release = &release;
                async move {
                    let token = LockToken::generate();
                    let taken: Option<String> = redis::cmd("SET")
                        .arg(&key)
                        .arg(token.as_str())
                        .arg("NX")
                        .arg("PX")
                        .arg(30_000)
                        .query_async(&mut raw)
                        .await?;
                    taken.ok_or("raw lock held")?;
                    let released: i64 = release
                        .key(&key)
                        .arg(token.as_str())
                        .invoke_async(&mut raw)
                        .await?;
                    check_len(released as usize, 1)
                }
            },
        )
        .await?,
    );
    for prefix in ["bench", "list", "old"] {
        let _ = ours.delete(prefix).await;
    }
    let mut raw = raw.clone();
    let mut cursor = 0u64;
    // Raw keys: found by pattern (this namespace only), fine for a benchmark's cleanup.
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{ns}}}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut raw)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(keys)
                .query_async::<()>(&mut raw)
                .await?;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(())
}

fn check_len(got: usize, want: usize) -> BoxResult<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("expected {want}, got {got}").into())
    }
}

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

async fn postgres_suite(url: &str, samples: usize, out: &mut Vec<OpResult>) -> BoxResult<()> {
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

async fn sqlite_suite(samples: usize, out: &mut Vec<OpResult>) -> BoxResult<()> {
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

/// Runs the suite.
pub async fn run(options: &Options) -> BoxResult<BackendResults> {
    let samples = if options.quick { 300 } else { 3_000 };
    let mut ops = Vec::new();
    let mut skipped = Vec::new();
    match std::env::var("CERTSTORE_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => redis_suite(&url, samples, &mut ops).await?,
        _ => skipped.push(("redis".into(), "CERTSTORE_TEST_REDIS_URL unset".into())),
    }
    match std::env::var("CERTSTORE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => postgres_suite(&url, samples, &mut ops).await?,
        _ => skipped.push((
            "postgres".into(),
            "CERTSTORE_TEST_POSTGRES_URL unset".into(),
        )),
    }
    sqlite_suite(samples, &mut ops).await?;
    Ok(BackendResults { ops, skipped })
}
