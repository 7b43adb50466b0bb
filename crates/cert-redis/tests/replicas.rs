//! Waiting for replica acknowledgement of lock writes, against the server named by
//! `CERTSTORE_TEST_REDIS_URL` (a standalone server without replicas; skipped loudly when
//! the variable is not set, failing under `CERTSTORE_REQUIRE_SERVICES=1`).
#![allow(clippy::unwrap_used)]

mod common;

use common::{fresh_namespace, url, with_query};

use std::time::{Duration, Instant};

use cert_core::{LockOptions, Locker, lock};
use cert_redis::{RedisConfig, RedisStorage};

/// Waiting for no replica (the URL says so explicitly) changes nothing: locks are taken,
/// refreshed and released as usual.
#[tokio::test]
async fn waiting_for_zero_replicas_locks_as_usual() {
    let Some(url) = url() else { return };
    let ns = fresh_namespace("wait0");
    let storage = RedisConfig::new(with_query(&url, "wait_replicas=0&wait_timeout_ms=50"))
        .with_namespace(&ns)
        .connect()
        .await
        .unwrap();
    let ttl = Duration::from_secs(5);
    let lease = storage.try_acquire("w", ttl).await.unwrap().unwrap();
    let lease = storage.refresh(&lease, ttl).await.unwrap();
    storage.release(&lease).await.unwrap();
}

/// A server without replicas cannot acknowledge one: acquiring fails with a clear,
/// retryable error after about the wait timeout, and leaves no lock behind.
#[tokio::test]
async fn missing_replica_acknowledgement_refuses_the_lock() {
    let Some(url) = url() else { return };
    let ns = fresh_namespace("wait1");
    let wait = Duration::from_millis(100);
    // From the URL, and from the builder: both must be honoured.
    let configs = [
        RedisConfig::new(with_query(&url, "wait_replicas=1&wait_timeout_ms=100")),
        RedisConfig::new(url.clone()).with_wait_replicas(1, wait),
    ];
    let plain = RedisStorage::connect(&url, &ns).await.unwrap();
    let ttl = Duration::from_secs(30);
    for config in configs {
        let storage = config.with_namespace(&ns).connect().await.unwrap();
        let started = Instant::now();
        let err = storage.try_acquire("needs-replica", ttl).await.unwrap_err();
        assert!(
            started.elapsed() >= wait,
            "WAIT did not wait: {:?}",
            started.elapsed()
        );
        assert!(err.is_retryable(), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("0 of the 1 required replicas"),
            "unclear error: {text}"
        );
        // Nothing is held: a storage that does not wait takes the lock at once.
        let lease = plain
            .try_acquire("needs-replica", ttl)
            .await
            .unwrap()
            .expect("the refused acquisition left the lock held");
        plain.release(&lease).await.unwrap();

        // lock() keeps retrying the transient failure and ends with it at its timeout.
        let options = LockOptions::default()
            .with_ttl(ttl)
            .with_timeout(Duration::from_millis(400));
        let locker: std::sync::Arc<dyn Locker> = std::sync::Arc::new(storage.clone());
        let err = lock(locker, "needs-replica", &options).await.unwrap_err();
        assert!(err.to_string().contains("required replicas"), "{err}");
        let lease = plain
            .try_acquire("needs-replica", ttl)
            .await
            .unwrap()
            .expect("lock() left the lock held");
        plain.release(&lease).await.unwrap();
    }
}

/// A malformed setting in the URL is refused when connecting, naming the parameter.
#[tokio::test]
async fn malformed_wait_setting_is_refused() {
    let Some(url) = url() else { return };
    let err = RedisConfig::new(with_query(&url, "wait_replicas=many"))
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("wait_replicas"), "{err}");
}
