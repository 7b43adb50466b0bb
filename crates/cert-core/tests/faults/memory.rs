//! The fault scenarios on [`MemoryStorage`](cert_core::MemoryStorage), and the
//! fault-injecting wrapper's own behaviour: failing after k writes, stalling a write, and
//! hanging lock refreshes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cert_core::testing::FaultyStorage;
use cert_core::{Error, LockOptions, Locker, MemoryStorage, Storage, StorageExt, lock};

fault_tests!(Some(super::Memory));

#[tokio::test]
async fn the_wrapper_fails_after_k_writes_until_healed() {
    let storage = FaultyStorage::new(MemoryStorage::new());
    storage.fail_after_writes(2);
    storage.store("a", b"1").await.unwrap();
    storage.delete("a").await.unwrap();
    let lease = storage
        .try_acquire("l", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let refused = storage.store_fenced("b", b"2", &lease).await;
    assert!(
        matches!(refused, Err(Error::Unavailable { .. })),
        "{refused:?}"
    );
    assert!(storage.delete_fenced("a", &lease).await.is_err());
    assert!(storage.store("c", b"3").await.is_err());
    assert_eq!(storage.inner().load_opt("b").await.unwrap(), None);
    assert_eq!(storage.writes(), 2);
    assert_eq!(storage.refused_writes(), 3);
    assert_eq!(storage.written_keys(), vec!["a", "a"]);

    storage.heal();
    storage.store_fenced("b", b"2", &lease).await.unwrap();
    assert_eq!(storage.inner().load("b").await.unwrap(), b"2");
    assert_eq!(storage.writes(), 3);
    storage.release(&lease).await.unwrap();
}

#[tokio::test]
async fn the_wrapper_stalls_the_nth_write() {
    let stall = Duration::from_millis(200);
    let storage = FaultyStorage::new(MemoryStorage::new());
    storage.stall_write(2, stall);
    storage.store("a", b"1").await.unwrap();
    let started = Instant::now();
    storage.store("b", b"2").await.unwrap();
    assert!(started.elapsed() >= stall, "the second write stalled");
    assert_eq!(storage.inner().load("b").await.unwrap(), b"2");
}

#[tokio::test]
async fn a_stalled_write_hangs_lock_refreshes() {
    let storage = FaultyStorage::new(MemoryStorage::new());
    let options = LockOptions::default().with_ttl(Duration::from_millis(300));
    let held = lock(Arc::new(storage.clone()), "hung", &options)
        .await
        .unwrap();
    storage.stall_write(1, Duration::from_secs(3));
    let write = tokio::spawn({
        let storage = storage.clone();
        let lease = held.lease();
        async move { storage.store_fenced("k", b"v", &lease).await }
    });
    // The keep-alive's refreshes wait for the hung store, so the lease is lost.
    tokio::time::timeout(super::PATIENCE, held.lost())
        .await
        .expect("the lease is lost while the store hangs");
    let refused = tokio::time::timeout(super::PATIENCE, write)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(refused, Err(Error::LockLost { .. })),
        "the write outlived its lease: {refused:?}"
    );
    assert_eq!(storage.inner().load_opt("k").await.unwrap(), None);
}

#[tokio::test]
async fn stalled_refreshes_lose_the_lease() {
    let storage = FaultyStorage::new(MemoryStorage::new());
    storage.stall_locks(Duration::from_secs(3600));
    let options = LockOptions::default().with_ttl(Duration::from_millis(300));
    let held = lock(Arc::new(storage.clone()), "stalled", &options)
        .await
        .unwrap();
    tokio::time::timeout(super::PATIENCE, held.lost())
        .await
        .expect("the lease is lost");
    assert!(held.is_lost());
    // Once it has run out, another holder takes the lock.
    let other = lock(
        Arc::clone(storage.inner()) as Arc<dyn Locker>,
        "stalled",
        &options.clone().with_timeout(super::PATIENCE),
    )
    .await
    .unwrap();
    assert!(!other.is_lost());
    other.release().await.unwrap();
}
