//! The certificate engine on shared in-memory storage: obtaining, loading on restart,
//! renewal, pick-up by another node, issuer fallback, backoff, a three-node cluster and
//! real TLS handshakes against the resolver.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use cert_core::rustls::pki_types::ServerName;
use cert_core::rustls::{self, RootCertStore};
use cert_core::testing::CountingIssuer;
use cert_core::tokio_rustls::{TlsAcceptor, TlsConnector};
use cert_core::{
    CertManager, Event, InternalIssuer, InternalIssuerConfig, Issuer, LockOptions, ManagerConfig,
    MemoryStorage, RetryPolicy, Store, server_config,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn internal(storage: &Arc<dyn Store>, leaf: Duration) -> Arc<InternalIssuer> {
    Arc::new(InternalIssuer::new(
        Arc::clone(storage),
        InternalIssuerConfig::default().with_leaf_lifetime(leaf),
    ))
}

fn config() -> ManagerConfig {
    ManagerConfig::default()
        .with_retry(RetryPolicy::new(
            Duration::from_millis(100),
            Duration::from_millis(400),
        ))
        .with_lock(LockOptions::default().with_ttl(Duration::from_secs(5)))
}

fn manager(storage: &Arc<dyn Store>, issuers: Vec<Arc<dyn Issuer>>) -> CertManager {
    CertManager::new(
        Arc::clone(storage),
        Arc::new(cert_core::Cache::new(1000)),
        issuers,
        config(),
    )
}

fn drain(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<Event> {
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    events
}

fn serial(manager: &CertManager, name: &str) -> String {
    manager.certificate_meta(name).unwrap().serial
}

#[tokio::test]
async fn obtains_once_then_loads_on_restart() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let issuer = CountingIssuer::new(internal(&storage, Duration::from_secs(3600)));
    let first = manager(&storage, vec![issuer.clone()]);
    let mut events = first.subscribe();
    first.manage(["a.example", "*.b.example"]).await.unwrap();
    assert_eq!(issuer.calls(), 2);
    let got = drain(&mut events);
    assert!(got.contains(&Event::Obtained {
        name: "a.example".into(),
        issuer: "local".into()
    }));
    assert!(first.cache().get("a.example").is_some());
    assert!(first.cache().get("x.b.example").is_some());

    // A restart: a new manager on the same storage loads instead of issuing.
    let second = manager(&storage, vec![issuer.clone()]);
    let mut events = second.subscribe();
    second.manage(["A.Example."]).await.unwrap();
    assert_eq!(issuer.calls(), 2, "no second issuance");
    assert_eq!(
        drain(&mut events),
        vec![Event::Loaded {
            name: "a.example".into()
        }]
    );
    assert_eq!(serial(&first, "a.example"), serial(&second, "a.example"));
    let keys = storage
        .list("certificates/local/a.example", true)
        .await
        .unwrap();
    assert_eq!(
        keys,
        vec![
            "certificates/local/a.example/a.example.bundle",
            "certificates/local/a.example/a.example.crt",
            "certificates/local/a.example/a.example.json",
            "certificates/local/a.example/a.example.key",
        ]
    );
}

#[tokio::test]
async fn renews_inside_the_window_and_another_node_picks_it_up() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    // Four-second leaves renew at half-life.
    let issuer = CountingIssuer::new(internal(&storage, Duration::from_secs(4)));
    let a = manager(&storage, vec![issuer.clone()]);
    let b = manager(&storage, vec![issuer.clone()]);
    a.manage(["r.example"]).await.unwrap();
    b.manage(["r.example"]).await.unwrap();
    assert_eq!(issuer.calls(), 1);
    let old = serial(&a, "r.example");
    assert_eq!(serial(&b, "r.example"), old);

    a.renew_due().await;
    assert_eq!(issuer.calls(), 1, "not due yet");

    tokio::time::sleep(Duration::from_millis(2600)).await;
    let mut a_events = a.subscribe();
    a.renew_due().await;
    assert_eq!(issuer.calls(), 2);
    assert!(drain(&mut a_events).contains(&Event::Renewed {
        name: "r.example".into(),
        issuer: "local".into()
    }));
    let new = serial(&a, "r.example");
    assert_ne!(new, old);

    let mut b_events = b.subscribe();
    b.renew_due().await;
    assert_eq!(issuer.calls(), 2, "b picks up a's renewal without issuing");
    assert_eq!(serial(&b, "r.example"), new);
    assert!(drain(&mut b_events).contains(&Event::Loaded {
        name: "r.example".into()
    }));
}

#[tokio::test]
async fn falls_back_to_the_next_issuer() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let broken = CountingIssuer::new(internal(&storage, Duration::from_secs(3600)));
    broken.set_failing(true);
    let backup: Arc<dyn Issuer> = Arc::new(InternalIssuer::new(
        Arc::clone(&storage),
        InternalIssuerConfig::default().with_name("backup"),
    ));
    let m = manager(&storage, vec![broken.clone(), backup]);
    let mut events = m.subscribe();
    m.manage(["f.example"]).await.unwrap();
    assert_eq!(broken.calls(), 1);
    assert_eq!(m.certificate_meta("f.example").unwrap().issuer, "backup");
    let got = drain(&mut events);
    assert!(
        got.iter()
            .any(|e| matches!(e, Event::Failed { issuer: Some(i), .. } if i == "local"))
    );
    assert!(got.contains(&Event::Obtained {
        name: "f.example".into(),
        issuer: "backup".into()
    }));
    // A restart finds it in the backup issuer's area.
    let again = manager(
        &storage,
        vec![
            broken.clone(),
            Arc::new(InternalIssuer::new(
                Arc::clone(&storage),
                InternalIssuerConfig::default().with_name("backup"),
            )),
        ],
    );
    again.manage(["f.example"]).await.unwrap();
    assert_eq!(broken.calls(), 1);
}

#[tokio::test]
async fn backs_off_and_keeps_serving_the_old_certificate() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let issuer = CountingIssuer::new(internal(&storage, Duration::from_secs(2)));
    let m = manager(&storage, vec![issuer.clone()]);
    m.manage(["k.example"]).await.unwrap();
    let old = serial(&m, "k.example");
    issuer.set_failing(true);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let mut events = m.subscribe();
    m.renew_due().await;
    assert_eq!(issuer.calls(), 2);
    m.renew_due().await;
    assert_eq!(issuer.calls(), 2, "inside the backoff: no attempt");
    tokio::time::sleep(Duration::from_millis(150)).await;
    m.renew_due().await;
    assert_eq!(issuer.calls(), 3, "backoff passed");
    let delays: Vec<Duration> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            Event::Failed {
                retry_in: Some(d), ..
            } => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(
        delays,
        vec![Duration::from_millis(100), Duration::from_millis(200)]
    );
    // Past expiry and still failing: the old certificate is still served.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(serial(&m, "k.example"), old);
    assert!(m.cache().get("k.example").is_some());

    issuer.set_failing(false);
    tokio::time::sleep(Duration::from_millis(450)).await;
    m.renew_due().await;
    assert_ne!(
        serial(&m, "k.example"),
        old,
        "renewed once the issuer is back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_fifty_names_fifty_issuances() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let issuer = CountingIssuer::new(internal(&storage, Duration::from_secs(3600)));
    let names: Vec<String> = (0..50).map(|i| format!("n{i}.cluster.example")).collect();
    let nodes: Vec<CertManager> = (0..3)
        .map(|_| manager(&storage, vec![issuer.clone()]))
        .collect();
    let runs = nodes.iter().map(|node| {
        let names = names.clone();
        let node = node.clone();
        tokio::spawn(async move { node.manage(names).await })
    });
    for run in futures::future::join_all(runs).await {
        run.unwrap().unwrap();
    }
    assert_eq!(issuer.calls(), 50, "exactly one issuance per name");
    for node in &nodes {
        for name in &names {
            assert!(node.cache().get(name).is_some(), "{name}");
        }
    }
    for name in &names {
        let serials: Vec<String> = nodes.iter().map(|n| serial(n, name)).collect();
        assert!(serials.iter().all(|s| s == &serials[0]), "{name}");
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    roots: RootCertStore,
    server_name: &str,
) -> Result<Vec<u8>, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        if let Ok(mut tls) = acceptor.accept(tcp).await {
            let _ = tls.write_all(b"hello").await;
            let _ = tls.shutdown().await;
        }
    });
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let result = async {
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        tls.read_to_end(&mut body)
            .await
            .map_err(|e| e.to_string())?;
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        assert_eq!(body, b"hello");
        Ok(leaf)
    }
    .await;
    let _ = server.await;
    result
}

#[tokio::test]
async fn real_handshakes_for_exact_and_wildcard_names() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let ca = internal(&storage, Duration::from_secs(3600));
    let m = manager(&storage, vec![ca.clone()]);
    m.manage(["www.example.test", "*.apps.example.test"])
        .await
        .unwrap();
    let mut roots = RootCertStore::empty();
    let root_pem = ca.root_pem().await.unwrap();
    for cert in cert_core::certificate::parse_chain(&root_pem).unwrap() {
        roots.add(cert).unwrap();
    }
    let acceptor = TlsAcceptor::from(Arc::new(server_config(Arc::new(m.resolver())).unwrap()));

    let leaf = handshake(acceptor.clone(), roots.clone(), "www.example.test")
        .await
        .unwrap();
    let info = cert_core::certificate::leaf_info(&leaf.into()).unwrap();
    assert_eq!(info.names, vec!["www.example.test"]);

    let leaf = handshake(acceptor.clone(), roots.clone(), "one.apps.example.test")
        .await
        .unwrap();
    let info = cert_core::certificate::leaf_info(&leaf.into()).unwrap();
    assert_eq!(info.names, vec!["*.apps.example.test"]);

    // No certificate for an unknown name: the handshake fails.
    let err = handshake(acceptor.clone(), roots.clone(), "other.test").await;
    assert!(err.is_err());

    // A client that does not trust the internal root refuses the certificate.
    let err = handshake(acceptor, RootCertStore::empty(), "www.example.test").await;
    assert!(err.unwrap_err().contains("UnknownIssuer"));
}

#[tokio::test]
async fn the_ca_is_created_once_per_storage() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let issuers: Vec<Arc<InternalIssuer>> = (0..8)
        .map(|_| internal(&storage, Duration::from_secs(60)))
        .collect();
    let roots = futures::future::join_all(issuers.iter().map(|i| i.root_pem())).await;
    let roots: Vec<String> = roots.into_iter().map(Result::unwrap).collect();
    assert!(roots.iter().all(|r| r == &roots[0]));
    assert!(roots[0].starts_with("-----BEGIN CERTIFICATE-----"));
}

#[tokio::test]
async fn unmanaged_certificates_are_served() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let m = manager(&storage, vec![]);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["own.example".to_string(), "*.own.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
    let names = m
        .add_certificate(&cert.pem(), &key.serialize_pem())
        .unwrap();
    assert_eq!(names, vec!["own.example", "*.own.example"]);
    assert!(m.cache().get("x.own.example").is_some());
    assert!(
        storage.list("", true).await.unwrap().is_empty(),
        "nothing stored"
    );
    assert!(matches!(
        m.manage(["no-issuer.example"]).await.unwrap_err()[0].1,
        cert_core::ManageError::NoIssuer
    ));
}

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

#[tokio::test]
async fn lazy_accept_prepares_the_certificate_before_the_handshake() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let ca = internal(&storage, Duration::from_secs(3600));
    let m = manager(&storage, vec![ca.clone()]);
    let config = Arc::new(server_config(Arc::new(m.resolver())).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_manager = m.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let seen = Arc::new(parking_lot::Mutex::new(None));
        let seen_in = Arc::clone(&seen);
        let mut tls = cert_core::accept_lazy(tcp, config, |name| async move {
            *seen_in.lock() = name.clone();
            if let Some(name) = name {
                server_manager.manage([name]).await.unwrap();
            }
        })
        .await
        .unwrap();
        tls.write_all(b"hi").await.unwrap();
        tls.shutdown().await.unwrap();
        seen.lock().clone()
    });
    let mut roots = RootCertStore::empty();
    for cert in cert_core::certificate::parse_chain(&ca.root_pem().await.unwrap()).unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("late.example").unwrap(), tcp)
        .await
        .unwrap();
    let mut body = Vec::new();
    tls.read_to_end(&mut body).await.unwrap();
    assert_eq!(body, b"hi");
    assert_eq!(server.await.unwrap().as_deref(), Some("late.example"));
    assert!(m.cache().get("late.example").is_some());
}

#[tokio::test]
async fn unmanaged_names_leave_the_cache_and_the_renewal_task() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let issuer = CountingIssuer::new(internal(&storage, Duration::from_secs(2)));
    let m = manager(&storage, vec![issuer.clone()]);
    m.manage(["gone.example", "kept.example"]).await.unwrap();
    let mut events = m.subscribe();
    m.unmanage(["Gone.Example", "never.example"]);
    assert_eq!(
        drain(&mut events),
        vec![Event::Evicted {
            name: "gone.example".into()
        }]
    );
    assert!(m.cache().get("gone.example").is_none());
    assert_eq!(m.managed_names(), vec!["kept.example"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    m.renew_due().await;
    assert_eq!(issuer.calls(), 3, "only kept.example was renewed");
    assert!(
        storage
            .exists("certificates/local/gone.example")
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

/// `manage`'s failures are one `std::error::Error` naming each name and its cause.
#[tokio::test]
async fn manage_failures_are_an_error_naming_each_name() {
    async fn run(manager: &CertManager) -> Result<(), Box<dyn std::error::Error>> {
        manager.manage(["a.example", "b.example"]).await?;
        Ok(())
    }
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let text = run(&manager(&storage, vec![]))
        .await
        .unwrap_err()
        .to_string();
    assert!(text.starts_with("2 names could not be managed: "), "{text}");
    assert!(text.contains("a.example: no issuer configured"), "{text}");
    assert!(text.contains("b.example: no issuer configured"), "{text}");
}
