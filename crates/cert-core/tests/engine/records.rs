//! Stored records: cleaning expired certificates once per interval across the fleet (and
//! several records at a time), a broken record reported and issued again, and the
//! three-value layout still loading.

use std::sync::Arc;
use std::time::Duration;

use cert_core::testing::{CountingIssuer, FaultyStorage};
use cert_core::{
    CertManager, Event, InternalIssuer, InternalIssuerConfig, LockOptions, MemoryStorage, Store,
};

use crate::{config, drain, internal, manager, serial};

#[tokio::test]
async fn cleaning_removes_expired_certificates_once_per_interval() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let short = internal(&storage, Duration::from_secs(1));
    let mut config = config();
    config.clean_grace = Duration::ZERO;
    config.clean_interval = Duration::from_secs(3600);
    let m = CertManager::new(
        Arc::clone(&storage),
        Arc::new(cert_core::Cache::new(10)),
        vec![short],
        config.clone(),
    );
    m.manage(["old.example"]).await.unwrap();
    let long = CertManager::new(
        Arc::clone(&storage),
        Arc::new(cert_core::Cache::new(10)),
        vec![Arc::new(InternalIssuer::new(
            Arc::clone(&storage),
            InternalIssuerConfig::default().with_name("long"),
        ))],
        config,
    );
    long.manage(["fresh.example"]).await.unwrap();
    // Issuance state left by a name no longer managed, and an account beside it.
    for key in [
        "pending/ca.example-dir/gone.example.key",
        "acme/ca.example-dir/orders/gone.example.json",
        "acme/ca.example-dir/accounts/default.json",
    ] {
        storage.store(key, b"left").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // Another node holding the cleaning lock: this one skips.
    let locker: Arc<dyn cert_core::Locker> = storage.clone();
    let held = cert_core::try_lock(locker, cert_core::keys::CLEAN_LOCK, &LockOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert!(m.clean_if_due().await.unwrap().is_empty());
    held.release().await.unwrap();

    // A lock left by a crashed node: its lease ran out.
    storage
        .try_acquire("issue/crashed.example", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let mut events = m.subscribe();
    let removed = m.clean_if_due().await.unwrap();
    assert_eq!(
        storage.clean_expired_locks().await.unwrap(),
        0,
        "cleaning already removed the expired lock"
    );
    assert_eq!(removed, vec!["certificates/local/old.example"]);
    assert!(drain(&mut events).contains(&Event::Cleaned {
        prefix: "certificates/local/old.example".into()
    }));
    assert!(
        !storage
            .exists("certificates/local/old.example")
            .await
            .unwrap()
    );
    assert!(
        storage
            .exists("certificates/long/fresh.example")
            .await
            .unwrap()
    );
    // The CA itself is never cleaned.
    assert!(storage.exists("ca/local/root.crt").await.unwrap());
    // Issuance state older than the grace period goes; accounts stay.
    assert!(
        !storage
            .exists("pending/ca.example-dir/gone.example.key")
            .await
            .unwrap()
    );
    assert!(
        !storage
            .exists("acme/ca.example-dir/orders/gone.example.json")
            .await
            .unwrap()
    );
    assert!(
        storage
            .exists("acme/ca.example-dir/accounts/default.json")
            .await
            .unwrap()
    );

    // Ran recently (on any node): the next call does nothing.
    m.manage(["old.example"]).await.ok();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(m.clean_if_due().await.unwrap().is_empty());
    assert!(
        storage
            .exists("certificates/local/old.example")
            .await
            .unwrap()
    );
}

/// A record that does not hold together (hand edits, a value damaged in storage) never
/// fails `manage` for the other names: the name is reported broken and issued again.
#[tokio::test]
async fn a_broken_record_is_reported_and_issued_again() {
    use cert_core::StorageExt;
    use cert_core::record::{self, CertificateId, RecordState};

    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let issuer = CountingIssuer::new(internal(&storage, Duration::from_secs(3600)));
    let first = manager(&storage, vec![issuer.clone()]);
    first.manage(["a.example", "b.example"]).await.unwrap();
    assert_eq!(issuer.calls(), 2);

    // a.example's bundle now holds b.example's key: it no longer belongs together.
    let a = CertificateId::new("local", "a.example");
    let b = CertificateId::new("local", "b.example");
    let mut bundle: serde_json::Value = storage.load_json(&a.bundle_key()).await.unwrap();
    let other: serde_json::Value = storage.load_json(&b.bundle_key()).await.unwrap();
    bundle["key_pem"] = other["key_pem"].clone();
    storage.store_json(&a.bundle_key(), &bundle).await.unwrap();
    assert!(matches!(
        record::load_certificate(storage.as_ref(), &a)
            .await
            .unwrap(),
        Some(RecordState::Broken { .. })
    ));

    let second = manager(&storage, vec![issuer.clone()]);
    let mut events = second.subscribe();
    second.manage(["a.example", "b.example"]).await.unwrap();
    assert_eq!(issuer.calls(), 3, "only the broken name is issued again");
    let got = drain(&mut events);
    assert!(
        got.iter()
            .any(|e| matches!(e, Event::Broken { name, .. } if name == "a.example")),
        "{got:?}"
    );
    assert!(second.cache().get("a.example").is_some());
    assert!(second.cache().get("b.example").is_some());
    assert!(matches!(
        record::load_certificate(storage.as_ref(), &a)
            .await
            .unwrap(),
        Some(RecordState::Valid(_))
    ));

    // Garbage in the bundle is broken too, and repaired the same way.
    storage.store(&a.bundle_key(), b"{not json").await.unwrap();
    let third = manager(&storage, vec![issuer.clone()]);
    third.manage(["a.example"]).await.unwrap();
    assert_eq!(issuer.calls(), 4);
    assert!(third.cache().get("a.example").is_some());
}

/// Stores written before bundles existed (three values) load without issuing again.
#[tokio::test]
async fn records_in_the_three_value_layout_still_load() {
    use cert_core::record::{self, CertificateId, Layout, RecordState};

    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let issuer = CountingIssuer::new(internal(&storage, Duration::from_secs(3600)));
    let first = manager(&storage, vec![issuer.clone()]);
    first.manage(["old.example"]).await.unwrap();
    let id = CertificateId::new("local", "old.example");
    storage.delete(&id.bundle_key()).await.unwrap();
    let Some(RecordState::Valid(loaded)) = record::load_certificate(storage.as_ref(), &id)
        .await
        .unwrap()
    else {
        panic!("the three values load as a record");
    };
    assert_eq!(loaded.layout, Layout::Parts);

    let second = manager(&storage, vec![issuer.clone()]);
    second.manage(["old.example"]).await.unwrap();
    assert_eq!(issuer.calls(), 1, "loaded, not issued again");
    assert_eq!(
        serial(&first, "old.example"),
        serial(&second, "old.example")
    );
}

/// The cleaning pass reads records several at a time, never more than `concurrency`.
#[tokio::test]
async fn cleaning_reads_records_concurrently_within_the_bound() {
    let memory: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let names: Vec<String> = (0..24).map(|i| format!("c{i}.example")).collect();
    let issuing = manager(&memory, vec![internal(&memory, Duration::from_secs(1))]);
    issuing.manage(&names).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let slow = FaultyStorage::from_arc(Arc::clone(&memory));
    slow.slow_loads(Duration::from_millis(5));
    let storage: Arc<dyn Store> = Arc::new(slow.clone());
    let mut config = config();
    config.clean_grace = Duration::ZERO;
    config.concurrency = 4;
    let cleaning = CertManager::new(
        Arc::clone(&storage),
        Arc::new(cert_core::Cache::new(10)),
        vec![internal(&storage, Duration::from_secs(1))],
        config,
    );
    let removed = cleaning.clean_if_due().await.unwrap();
    let mut expected: Vec<String> = names
        .iter()
        .map(|n| format!("certificates/local/{n}"))
        .collect();
    expected.sort();
    assert_eq!(removed, expected);
    let most = slow.most_loads_at_once();
    assert!((2..=4).contains(&most), "{most} loads at once");
}
