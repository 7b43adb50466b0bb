//! Redis-specific behaviour against the server named by `CERTSTORE_TEST_REDIS_URL`
//! (skipped loudly when it is not set, failing under `CERTSTORE_REQUIRE_SERVICES=1`): the
//! data layout, paging of large listings and deletes, isolation of namespaces, locks
//! judged by the server's clock, and `Debug` without secrets.
#![allow(clippy::unwrap_used)]

mod common;

use common::{fresh_namespace, url};

use std::time::{Duration, SystemTime};

use cert_core::{Error, Locker, Storage};
use cert_redis::{RedisConfig, RedisStorage};
use redis::AsyncCommands;

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Deletes every Redis key of `ns` (test cleanup only: `KEYS` is fine on a test server).
async fn wipe(url: &str, ns: &str) {
    let mut conn = raw(url).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{ns}}}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    for key in keys {
        let _: () = conn.del(key).await.unwrap();
    }
}

#[tokio::test]
async fn layout_is_the_exact_bytes_a_time_and_one_index() {
    let Some(url) = url() else { return };
    let ns = fresh_namespace("layout");
    let storage = RedisStorage::connect(&url, &ns).await.unwrap();
    let before = SystemTime::now();
    let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    storage.store("certs/a.crt", pem).await.unwrap();
    let mut conn = raw(&url).await;
    let value_name = format!("{{{ns}}}:v:certs/a.crt");
    let modified_name = format!("{{{ns}}}:modified");
    let stored: Vec<u8> = conn.get(&value_name).await.unwrap();
    assert_eq!(stored, pem, "GET returns exactly the stored bytes");
    let nanos: u64 = conn.hget(&modified_name, "certs/a.crt").await.unwrap();
    let index: Vec<String> = conn.zrange(format!("{{{ns}}}:index"), 0, -1).await.unwrap();
    assert_eq!(index, ["certs/a.crt"]);
    let info = storage.stat("certs/a.crt").await.unwrap();
    assert_eq!(info.size, pem.len() as u64);
    assert!(info.is_terminal);
    assert!(info.modified >= before, "{:?} < {before:?}", info.modified);
    assert_eq!(
        info.modified,
        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
    );
    let prefix = storage.stat("certs").await.unwrap();
    assert!(!prefix.is_terminal);
    assert_eq!(prefix.modified, info.modified);

    // Overwriting keeps one index entry; size and time follow the new value.
    storage.store("certs/a.crt", b"LONGER PEM").await.unwrap();
    assert_eq!(storage.stat("certs/a.crt").await.unwrap().size, 10);
    let index_len: i64 = conn.zcard(format!("{{{ns}}}:index")).await.unwrap();
    assert_eq!(index_len, 1);

    // A value set by hand is read as it is; without a time field its time is the epoch.
    let _: () = conn.set(&value_name, b"by hand").await.unwrap();
    let _: () = conn.hdel(&modified_name, "certs/a.crt").await.unwrap();
    assert_eq!(storage.load("certs/a.crt").await.unwrap(), b"by hand");
    let info = storage.stat("certs/a.crt").await.unwrap();
    assert_eq!(
        (info.size, info.modified),
        (7, SystemTime::UNIX_EPOCH),
        "{info:?}"
    );

    // Bytes that would read as a headed record are kept whole.
    let mut crafted = b"cs1\0".to_vec();
    crafted.extend_from_slice(&[0u8; 8]);
    crafted.extend_from_slice(&2u64.to_be_bytes());
    crafted.extend_from_slice(b"xy");
    storage.store("certs/crafted", &crafted).await.unwrap();
    assert_eq!(storage.load("certs/crafted").await.unwrap(), crafted);
    assert_eq!(
        storage.stat("certs/crafted").await.unwrap().size,
        crafted.len() as u64
    );

    storage.delete("certs").await.unwrap();
    let left: i64 = conn.exists(&value_name).await.unwrap();
    assert_eq!(left, 0);
    let index_len: i64 = conn.zcard(format!("{{{ns}}}:index")).await.unwrap();
    assert_eq!(index_len, 0);
    let times: i64 = conn.hlen(&modified_name).await.unwrap();
    assert_eq!(times, 0, "deleting removes the time fields too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_and_deleting_page_through_many_keys() {
    let Some(url) = url() else { return };
    let ns = fresh_namespace("paging");
    let storage = RedisStorage::connect(&url, &ns).await.unwrap();
    // 12,000 keys in 3 subtrees (more than two listing pages and many delete batches),
    // plus neighbours that sort between them and must not leak into the answers.
    let mut tasks = Vec::new();
    for chunk in 0..12 {
        let storage = storage.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..1_000 {
                let n = chunk * 1_000 + i;
                let key = format!("p/d{}/k{n:05}", n % 3);
                storage.store(&key, b"x").await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for key in ["p/d0-x", "p/d1.y", "p-q/z", "p0", "p/d2"] {
        storage.store(key, b"n").await.unwrap();
    }
    assert_eq!(
        storage.list("p", false).await.unwrap(),
        ["p/d0", "p/d0-x", "p/d1", "p/d1.y", "p/d2"]
    );
    let all = storage.list("p", true).await.unwrap();
    assert_eq!(all.len(), 12_000 + 3);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "not sorted");
    assert_eq!(storage.list("p/d1", true).await.unwrap().len(), 4_000);
    assert_eq!(storage.list("", false).await.unwrap(), ["p", "p-q", "p0"]);

    // A key that is also a prefix keeps both.
    assert_eq!(storage.load("p/d2").await.unwrap(), b"n");
    assert!(storage.stat("p/d2").await.unwrap().is_terminal);

    storage.delete("p/d1").await.unwrap();
    assert!(!storage.exists("p/d1").await.unwrap());
    assert!(storage.exists("p/d1.y").await.unwrap());
    assert_eq!(storage.list("p", true).await.unwrap().len(), 8_000 + 3);
    storage.delete("p").await.unwrap();
    assert!(matches!(
        storage.delete("p").await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(storage.list("", false).await.unwrap(), ["p-q", "p0"]);
    wipe(&url, &ns).await;
}

#[tokio::test]
async fn namespaces_are_isolated() {
    let Some(url) = url() else { return };
    let ns_a = fresh_namespace("iso_a");
    let ns_b = fresh_namespace("iso_b");
    let a = RedisStorage::connect(&url, &ns_a).await.unwrap();
    let b = RedisStorage::connect(&url, &ns_b).await.unwrap();
    a.store("k", b"a").await.unwrap();
    assert!(matches!(b.load("k").await, Err(Error::NotFound { .. })));
    assert!(b.list("", true).await.unwrap().is_empty());
    let lease = a
        .try_acquire("l", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let other = b
        .try_acquire("l", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    a.release(&lease).await.unwrap();
    b.release(&other).await.unwrap();
    a.delete("k").await.unwrap();
    assert!(
        RedisStorage::connect(&url, "bad{ns}").await.is_err(),
        "braces would break the hash tag"
    );
}

#[tokio::test]
async fn locks_expire_by_the_server_clock_and_check_tokens() {
    let Some(url) = url() else { return };
    let ns = fresh_namespace("locks");
    let one = RedisStorage::connect(&url, &ns).await.unwrap();
    let two = RedisStorage::connect(&url, &ns).await.unwrap();
    let lease = one
        .try_acquire("issue/x", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    assert!(
        two.try_acquire("issue/x", Duration::from_secs(5))
            .await
            .unwrap()
            .is_none()
    );
    let mut conn = raw(&url).await;
    let pttl: i64 = conn.pttl(format!("{{{ns}}}:lock:issue/x")).await.unwrap();
    assert!((1..=300).contains(&pttl), "pttl {pttl}");
    let lease = one.refresh(&lease, Duration::from_secs(10)).await.unwrap();
    let pttl: i64 = conn.pttl(format!("{{{ns}}}:lock:issue/x")).await.unwrap();
    assert!(pttl > 5_000, "pttl {pttl}");
    let short = one
        .refresh(&lease, Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let taken = two
        .try_acquire("issue/x", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        one.refresh(&short, Duration::from_secs(5)).await,
        Err(Error::LockLost { .. })
    ));
    assert!(matches!(
        one.release(&short).await,
        Err(Error::LockLost { .. })
    ));
    two.release(&taken).await.unwrap();
    assert!(matches!(
        two.release(&taken).await,
        Err(Error::LockLost { .. })
    ));
    assert!(matches!(
        one.try_acquire("../x", Duration::from_secs(1)).await,
        Err(Error::InvalidKey { .. })
    ));
}

#[tokio::test]
async fn debug_hides_the_password() {
    let Some(url) = url() else { return };
    // The shared test server has no password; a wrong one is refused, and never printed.
    let with_password = url.replacen("redis://", "redis://:not-the-password@", 1);
    let config = RedisConfig::new(with_password).with_response_timeout(Duration::from_secs(2));
    assert!(!format!("{config:?}").contains("not-the-password"));
    match config.connect().await {
        Ok(storage) => {
            let shown = format!("{storage:?}");
            assert!(!shown.contains("not-the-password"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        Err(err) => {
            assert!(
                !format!("{err:?} {err}").contains("not-the-password"),
                "{err:?}"
            );
            assert!(
                !err.is_retryable(),
                "bad credentials are not retryable: {err:?}"
            );
        }
    }
    let storage = RedisStorage::connect(&url, "debug").await.unwrap();
    let shown = format!("{storage:?}");
    assert!(shown.contains("namespace: \"debug\""), "{shown}");
}
