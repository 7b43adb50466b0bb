//! The Redis side of the `backends` suite: [`RedisStorage`] against a raw multiplexed
//! connection on the same server, and the two-round-trip store it replaced.

use std::time::Duration;

use cert_core::{LockToken, Locker, Storage};
use cert_redis::RedisStorage;
use redis::Script;
use redis::aio::MultiplexedConnection;

use super::{LIST_KEYS, OpResult, VALUE_LEN, check_len, pair};
use crate::{BoxResult, fixtures};

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

pub(super) async fn redis_suite(
    url: &str,
    samples: usize,
    out: &mut Vec<OpResult>,
) -> BoxResult<()> {
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
