//! The metrics an operator scrapes: an HTTP client reads the Prometheus endpoint while an
//! engine obtains and renews certificates, serves handshakes, meets a storage outage and
//! loses a lock, and the series for each of those move.
//!
//! One test per process (the recorder is process-wide): `certstore serve --metrics` is
//! checked end to end in `serve.rs`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cert_core::metrics::Metered;
use cert_core::rustls::pki_types::ServerName;
use cert_core::testing::FaultyStorage;
use cert_core::tokio_rustls::{TlsAcceptor, TlsConnector};
use cert_core::{
    Cache, CertManager, InternalIssuer, InternalIssuerConfig, LockOptions, Locker, ManagerConfig,
    MemoryStorage, OnDemandConfig, Storage, Store, lock, server_config,
};
use common::{client_config, http_get, series};

/// One TLS handshake for `name` against the manager's resolver, trusting `root_pem`:
/// `Ok` when it completed, else what each side saw.
async fn handshake(manager: &CertManager, name: &str, root_pem: &str) -> Result<(), String> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let config = server_config(Arc::new(manager.resolver())).unwrap();
    let server = tokio::spawn(async move {
        let accepted = TlsAcceptor::from(Arc::new(config)).accept(server_io).await;
        accepted.map(drop)
    });
    let connected = TlsConnector::from(client_config(root_pem))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), client_io)
        .await;
    let accepted = server.await.unwrap();
    match (connected, accepted) {
        (Ok(_), Ok(())) => Ok(()),
        (client, server) => Err(format!(
            "{name}: client {:?}, server {server:?}",
            client.map(drop)
        )),
    }
}

/// One caller of the cache's single-flight load for a name holds the load open; a second
/// caller for the name is polled once (it finds the load under way and waits), then the
/// first finishes and both get its certificate.
async fn single_flight_wait(manager: &CertManager) {
    use futures::FutureExt;
    let cache = Cache::new(10);
    let served = manager.cache().get("a.test").unwrap();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    let first = cache.get_or_try_insert_with("flight.test", || async {
        started_tx.send(()).unwrap();
        finished.await.unwrap();
        Ok::<_, ()>(Arc::clone(&served))
    });
    let mut first = Box::pin(first);
    let mut second = Box::pin(
        cache.get_or_try_insert_with("flight.test", || async { Err::<std::sync::Arc<_>, ()>(()) }),
    );
    assert!(
        (&mut first).now_or_never().is_none(),
        "the first load waits"
    );
    started.await.unwrap();
    assert!(
        (&mut second).now_or_never().is_none(),
        "the second caller waits"
    );
    finish.send(()).unwrap();
    let (a, b) = tokio::join!(first, second);
    assert!(
        Arc::ptr_eq(&a.unwrap(), &b.unwrap()),
        "one load served both"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_follows_issuance_renewal_handshakes_an_outage_and_a_lost_lock() {
    let handle = certstore::prometheus::install().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&healthy);
    tokio::spawn(certstore::prometheus::serve(listener, handle, move || {
        flag.load(Ordering::SeqCst)
    }));
    let scrape = || async move {
        let (status, text) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        text
    };

    // Health follows the caller's check; unknown paths are 404.
    assert_eq!(http_get(addr, "/healthz").await.0, 503);
    healthy.store(true, Ordering::SeqCst);
    assert_eq!(http_get(addr, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(http_get(addr, "/nothing").await.0, 404);

    let faulty = FaultyStorage::new(MemoryStorage::new());
    let store: Arc<dyn Store> = Arc::new(Metered::new(faulty.clone(), "memory"));
    let ca = Arc::new(InternalIssuer::new(
        Arc::clone(&store),
        InternalIssuerConfig::default(),
    ));
    let mut config = ManagerConfig::default();
    config.renew_ratio = 1.0; // renew with the whole lifetime left: always due
    let manager = CertManager::new(
        Arc::clone(&store),
        Arc::new(Cache::new(100)),
        vec![ca.clone()],
        config,
    );
    let issuer = manager.issuer_ids().remove(0);

    // Issuance.
    manager.manage(["a.test"]).await.unwrap();
    let text = scrape().await;
    let obtained = "certstore_certificates_obtained_total";
    assert_eq!(series(&text, obtained, &[("issuer", &issuer)]), Some(1.0));
    assert_eq!(series(&text, "certstore_managed_names", &[]), Some(1.0));
    let left = series(&text, "certstore_certificates_earliest_expiry_seconds", &[]).unwrap();
    assert!(left > 3600.0, "{left}");
    assert!(series(&text, "certstore_cache_entries", &[]).unwrap() >= 1.0);
    let fenced_stores = [("backend", "memory"), ("operation", "store_fenced")];
    let timed = "certstore_storage_operation_duration_seconds_count";
    assert!(
        series(&text, timed, &fenced_stores).unwrap() >= 1.0,
        "{text}"
    );
    assert!(series(&text, "certstore_lock_wait_seconds_count", &[]).unwrap() >= 1.0);
    assert!(series(&text, "certstore_lock_hold_seconds_count", &[]).unwrap() >= 1.0);
    assert!(text.contains("# HELP certstore_certificates_obtained_total"));

    // Renewal.
    manager.renew_due().await;
    let text = scrape().await;
    let renewed = "certstore_certificates_renewed_total";
    assert_eq!(series(&text, renewed, &[("issuer", &issuer)]), Some(1.0));
    assert_eq!(series(&text, obtained, &[("issuer", &issuer)]), Some(1.0));

    // Handshakes: one served, one for a name nobody manages.
    let root = ca.root_pem().await.unwrap();
    handshake(&manager, "a.test", &root).await.unwrap();
    let refused = handshake(&manager, "unknown.test", &root).await;
    assert!(refused.is_err_and(|err| err.contains("no server certificate")));
    let text = scrape().await;
    assert_eq!(series(&text, "certstore_cache_hits_total", &[]), Some(1.0));
    assert_eq!(
        series(&text, "certstore_cache_misses_total", &[]),
        Some(1.0)
    );

    // On-demand TLS: one name allowed (eight handshakes at once, one issuance), one
    // denied, and a second allowed name over the rate limit of one.
    manager.enable_on_demand(
        OnDemandConfig::default()
            .with_decision(|name: String| async move { name.starts_with("ok") })
            .with_rate_limit(1, Duration::from_secs(3600)),
    );
    let storm: Vec<_> = (0..8)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move { manager.prepare_handshake(Some("ok1.test".into())).await })
        })
        .collect();
    for handshake in storm {
        handshake.await.unwrap();
    }
    manager.prepare_handshake(Some("no.test".into())).await;
    manager.prepare_handshake(Some("ok2.test".into())).await;
    let text = scrape().await;
    let decisions = "certstore_on_demand_decisions_total";
    assert_eq!(
        series(&text, decisions, &[("decision", "allowed")]),
        Some(1.0)
    );
    assert_eq!(
        series(&text, decisions, &[("decision", "denied")]),
        Some(1.0)
    );
    assert_eq!(
        series(&text, decisions, &[("decision", "rate_limited")]),
        Some(1.0)
    );
    assert_eq!(series(&text, obtained, &[("issuer", &issuer)]), Some(2.0));
    manager.unmanage(["ok1.test", "ok2.test"]);

    // Single flight: a second caller for a name whose load is under way waits for it.
    let waits = "certstore_cache_single_flight_waits_total";
    let before = series(&scrape().await, waits, &[]).unwrap_or(0.0);
    single_flight_wait(&manager).await;
    let after = series(&scrape().await, waits, &[]);
    assert_eq!(after, Some(before + 1.0));

    // A storage outage: writes fail, the new name cannot be issued.
    faulty.fail_after_writes(0);
    assert!(manager.manage(["b.test"]).await.is_err());
    faulty.heal();
    let text = scrape().await;
    let failed = "certstore_certificates_failed_total";
    assert!(
        series(&text, failed, &[("reason", "storage")]).unwrap() >= 1.0,
        "{text}"
    );
    let errors = "certstore_storage_errors_total";
    let unavailable = [("backend", "memory"), ("kind", "unavailable")];
    assert!(
        series(&text, errors, &unavailable).unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(series(&text, "certstore_managed_names", &[]), Some(2.0));

    // A lost lock: refreshes stall past the lease, and a fenced write with it is refused.
    assert_eq!(series(&text, "certstore_lock_leases_lost_total", &[]), None);
    faulty.stall_locks(Duration::from_secs(3600));
    let options = LockOptions::default().with_ttl(Duration::from_millis(300));
    let locker: Arc<dyn Locker> = Arc::clone(&store) as Arc<dyn Locker>;
    let guard = lock(locker, "drill/lost", &options).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), guard.lost())
        .await
        .unwrap();
    let refused = store
        .store_fenced("drill/value", b"late", &guard.lease())
        .await;
    assert!(refused.is_err(), "{refused:?}");
    drop(guard);
    faulty.heal();
    let text = scrape().await;
    assert_eq!(
        series(&text, "certstore_lock_leases_lost_total", &[]),
        Some(1.0)
    );
    let refused = "certstore_lock_fenced_writes_refused_total";
    assert_eq!(series(&text, refused, &[("backend", "memory")]), Some(1.0));
    assert_eq!(faulty.inner().load("drill/value").await.ok(), None);
}
