//! On-demand names: refused before the decision when they cannot be stored, and dropped
//! after repeated failures while the fleet-wide backoff holds other nodes back.

use std::sync::Arc;
use std::time::Duration;

use cert_core::testing::CountingIssuer;
use cert_core::{CertManager, LockOptions, ManagerConfig, MemoryStorage, RetryPolicy, Store};

use crate::{internal, manager};

/// Names too long to be stored are refused before the on-demand decision runs.
#[tokio::test]
async fn on_demand_refuses_names_that_cannot_be_stored_first() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let issuer = CountingIssuer::new(internal(&storage, Duration::from_secs(3600)));
    let manager = manager(&storage, vec![issuer.clone()]);
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    manager.enable_on_demand(
        cert_core::OnDemandConfig::default().with_decision(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { true }
        }),
    );
    let label = "a".repeat(50);
    let long = [label.as_str(); 4].join(".");
    manager.prepare_handshake(Some(long.clone())).await;
    assert_eq!(asked.load(Ordering::SeqCst), 0, "the decision never ran");
    assert_eq!(issuer.calls(), 0);
    assert!(manager.managed_names().is_empty());

    manager.prepare_handshake(Some("ok.example".into())).await;
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert!(manager.cache().get("ok.example").is_some());
}

/// An on-demand name whose issuance keeps failing is dropped after `max_failures`, and
/// the fleet-wide backoff keeps a second node from ordering for it meanwhile.
#[tokio::test]
async fn failing_on_demand_names_back_off_fleet_wide_and_are_dropped() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let issuer = CountingIssuer::new(internal(&storage, Duration::from_secs(3600)));
    issuer.set_failing(true);
    let slow_retry = ManagerConfig::default()
        .with_retry(RetryPolicy::new(
            Duration::from_secs(60),
            Duration::from_secs(600),
        ))
        .with_lock(LockOptions::default().with_ttl(Duration::from_secs(5)));
    let node = |issuer: Arc<CountingIssuer>| {
        CertManager::new(
            Arc::clone(&storage),
            Arc::new(cert_core::Cache::new(100)),
            vec![issuer],
            slow_retry.clone(),
        )
    };
    let first = node(issuer.clone());
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    first.enable_on_demand(
        cert_core::OnDemandConfig::default()
            .with_max_failures(1)
            .with_decision(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
                async { true }
            }),
    );
    first.prepare_handshake(Some("nope.example".into())).await;
    assert_eq!(issuer.calls(), 1);
    assert!(
        first.managed_names().is_empty(),
        "dropped after one failure"
    );
    // Dropped: further handshakes do not even ask.
    first.prepare_handshake(Some("nope.example".into())).await;
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(issuer.calls(), 1);

    // Another node sees the fleet's backoff in storage and does not order.
    let other_issuer = CountingIssuer::new(internal(&storage, Duration::from_secs(3600)));
    let second = node(other_issuer.clone());
    let err = second.manage(["nope.example"]).await.unwrap_err();
    assert!(
        matches!(err[0].1, cert_core::ManageError::BackingOff { .. }),
        "{:?}",
        err[0].1
    );
    assert_eq!(other_issuer.calls(), 0);
    // The renewal pass respects it too.
    second.renew_due().await;
    assert_eq!(other_issuer.calls(), 0);
}
