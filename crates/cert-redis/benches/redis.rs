//! `RedisStorage` against the raw `redis` client doing the same round trips, in the same
//! run, on the server named by `CERTSTORE_TEST_REDIS_URL` (nothing runs when it is unset):
//!
//! - store 4 KiB over an existing key: ours (one `MULTI`/`EXEC` transaction: `SET` of the
//!   bytes, `HSET` of the modification time, `ZADD` to the index) vs `SET`; vs the raw
//!   client sending the same transaction (the same round trip and server work); and vs the
//!   raw client running the same writes as a Lua script (`raw_script`), the alternative
//!   one-round-trip design
//! - store 4 KiB to a new key: ours (the same single transaction) vs `SET`
//! - load 4 KiB: ours (`GET`) vs `GET`
//! - list 100 keys: ours (index range) vs `ZRANGEBYLEX` on a sorted set of 100 members
//! - lock + release: ours vs `SET NX PX` + a compare-and-delete script
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use cert_core::{Locker, Storage};
use cert_redis::RedisStorage;
use criterion::{BatchSize, Criterion};
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Script};
use tokio::runtime::Runtime;

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

fn namespace() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bench_{}_{nanos}", std::process::id())
}

struct Setup {
    rt: Runtime,
    ours: RedisStorage,
    raw: MultiplexedConnection,
    ns: String,
}

impl Setup {
    fn new(url: &str) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ns = namespace();
        let (ours, raw) = rt.block_on(async {
            let ours = RedisStorage::connect(url, &ns).await.unwrap();
            let raw = redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            (ours, raw)
        });
        Setup { rt, ours, raw, ns }
    }

    fn raw_key(&self, name: &str) -> String {
        format!("{{{}}}:raw:{name}", self.ns)
    }
}

fn store_and_load(c: &mut Criterion, s: &mut Setup) {
    let value = vec![0xA5u8; 4096];
    let raw_key = s.raw_key("value");
    let mut group = c.benchmark_group("redis_store_4k");
    group.bench_function("raw_set", |b| {
        let mut raw = s.raw.clone();
        b.iter(|| {
            s.rt.block_on(async {
                let _: () = raw.set(&raw_key, black_box(&value)).await.unwrap();
            })
        })
    });
    group.bench_function("raw_script", |b| {
        let mut raw = s.raw.clone();
        let script = Script::new(
            "redis.call('SET', KEYS[1], ARGV[1]) redis.call('HSET', KEYS[3], ARGV[2], ARGV[3]) \
             redis.call('ZADD', KEYS[2], 0, ARGV[2]) return 1",
        );
        let index = s.raw_key("index");
        let modified = s.raw_key("modified");
        b.iter(|| {
            s.rt.block_on(async {
                let _: () = script
                    .key(&raw_key)
                    .key(&index)
                    .key(&modified)
                    .arg(black_box(&value))
                    .arg("value")
                    .arg(1_700_000_000_000_000_000u64)
                    .invoke_async(&mut raw)
                    .await
                    .unwrap();
            })
        })
    });
    group.bench_function("raw_multi", |b| {
        let mut raw = s.raw.clone();
        let index = s.raw_key("index");
        let modified = s.raw_key("modified");
        b.iter(|| {
            s.rt.block_on(async {
                let _: () = redis::pipe()
                    .atomic()
                    .set(&raw_key, black_box(&value))
                    .ignore()
                    .hset(&modified, "value", 1_700_000_000_000_000_000u64)
                    .ignore()
                    .zadd(&index, "value", 0)
                    .ignore()
                    .query_async(&mut raw)
                    .await
                    .unwrap();
            })
        })
    });
    group.bench_function("ours", |b| {
        b.iter(|| {
            s.rt.block_on(async {
                s.ours
                    .store("bench/value", black_box(&value))
                    .await
                    .unwrap();
            })
        })
    });
    group.finish();

    // Creating a key (absent before each timed call): the same one round trip as an
    // overwrite, the transaction creating the value, its time and its index entry.
    let mut group = c.benchmark_group("redis_store_4k_new_key");
    group.bench_function("raw_set", |b| {
        let mut raw = s.raw.clone();
        let mut cleaner = s.raw.clone();
        b.iter_batched(
            || {
                s.rt.block_on(async {
                    let _: () = cleaner.del(&raw_key).await.unwrap();
                })
            },
            |()| {
                s.rt.block_on(async {
                    let _: () = raw.set(&raw_key, black_box(&value)).await.unwrap();
                })
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("ours", |b| {
        b.iter_batched(
            || {
                s.rt.block_on(async {
                    let _ = s.ours.delete("bench/new").await;
                })
            },
            |()| {
                s.rt.block_on(async {
                    s.ours.store("bench/new", black_box(&value)).await.unwrap();
                })
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();

    // Seeded here, not only by the store benchmarks: a filter may run the loads alone.
    s.rt.block_on(async {
        s.ours.store("bench/value", &value).await.unwrap();
        let mut raw = s.raw.clone();
        let _: () = raw.set(&raw_key, &value).await.unwrap();
    });
    let mut group = c.benchmark_group("redis_load_4k");
    group.bench_function("raw_get", |b| {
        let mut raw = s.raw.clone();
        b.iter(|| {
            s.rt.block_on(async {
                let got: Vec<u8> = raw.get(&raw_key).await.unwrap();
                black_box(got)
            })
        })
    });
    group.bench_function("ours", |b| {
        b.iter(|| {
            s.rt.block_on(async { black_box(s.ours.load("bench/value").await.unwrap()) })
        })
    });
    group.finish();
}

fn list(c: &mut Criterion, s: &mut Setup) {
    let raw_index = s.raw_key("index");
    s.rt.block_on(async {
        let mut raw = s.raw.clone();
        for i in 0..100 {
            let key = format!("list/k{i:03}");
            s.ours.store(&key, b"v").await.unwrap();
            let _: () = raw.zadd(&raw_index, &key, 0).await.unwrap();
        }
    });
    let mut group = c.benchmark_group("redis_list_100");
    group.bench_function("raw_zrangebylex", |b| {
        let mut raw = s.raw.clone();
        b.iter(|| {
            s.rt.block_on(async {
                let keys: Vec<String> = redis::cmd("ZRANGEBYLEX")
                    .arg(&raw_index)
                    .arg("[list/")
                    .arg("(list0")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(5000)
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                assert_eq!(keys.len(), 100);
                black_box(keys)
            })
        })
    });
    group.bench_function("ours", |b| {
        b.iter(|| {
            s.rt.block_on(async {
                let keys = s.ours.list("list", true).await.unwrap();
                assert_eq!(keys.len(), 100);
                black_box(keys)
            })
        })
    });
    group.finish();
}

fn lock_release(c: &mut Criterion, s: &mut Setup) {
    let raw_lock = s.raw_key("lock");
    let release = Script::new(RELEASE);
    let mut group = c.benchmark_group("redis_lock_release");
    group.bench_function("raw_set_nx_px_and_script", |b| {
        let mut raw = s.raw.clone();
        b.iter(|| {
            s.rt.block_on(async {
                let token = cert_core::LockToken::generate();
                let taken: Option<String> = redis::cmd("SET")
                    .arg(&raw_lock)
                    .arg(token.as_str())
                    .arg("NX")
                    .arg("PX")
                    .arg(30_000)
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                assert!(taken.is_some());
                let released: i64 = release
                    .key(&raw_lock)
                    .arg(token.as_str())
                    .invoke_async(&mut raw)
                    .await
                    .unwrap();
                assert_eq!(released, 1);
            })
        })
    });
    group.bench_function("ours", |b| {
        b.iter(|| {
            s.rt.block_on(async {
                let lease = s
                    .ours
                    .try_acquire("bench/lock", Duration::from_secs(30))
                    .await
                    .unwrap()
                    .unwrap();
                s.ours.release(&lease).await.unwrap();
            })
        })
    });
    group.finish();
}

fn cleanup(s: &mut Setup) {
    s.rt.block_on(async {
        let _ = s.ours.delete("bench").await;
        let _ = s.ours.delete("list").await;
        let mut raw = s.raw.clone();
        for name in ["value", "index", "lock"] {
            let _: redis::RedisResult<()> = raw.del(s.raw_key(name)).await;
        }
    });
}

fn main() {
    let url = match std::env::var("CERTSTORE_TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            eprintln!("SKIPPED: CERTSTORE_TEST_REDIS_URL is not set; no Redis benchmark ran");
            return;
        }
    };
    let mut criterion = Criterion::default().configure_from_args();
    let mut setup = Setup::new(&url);
    store_and_load(&mut criterion, &mut setup);
    list(&mut criterion, &mut setup);
    lock_release(&mut criterion, &mut setup);
    cleanup(&mut setup);
    criterion.final_summary();
}
