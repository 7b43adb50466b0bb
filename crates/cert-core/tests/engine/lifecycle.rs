//! One node and several on one storage: obtaining once then loading on restart, renewal
//! picked up by another node, issuer fallback, backoff, a three-node cluster, the CA
//! created once, names no longer managed, and `manage`'s combined error.

use std::sync::Arc;
use std::time::Duration;

use cert_core::testing::CountingIssuer;
use cert_core::{
    CertManager, Event, InternalIssuer, InternalIssuerConfig, Issuer, MemoryStorage, Store,
};

use crate::{drain, internal, manager, serial};

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

/// A node learning of another node's renewal pays one storage read: no lock, no reload
/// under it, no issuance. (The runtime has one thread, so a recorder local to it sees
/// every storage operation the second node makes through its `Metered` storage.)
#[tokio::test]
async fn another_nodes_renewal_costs_one_read() {
    use cert_core::metrics::{Metered, names};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let issuer = CountingIssuer::new(internal(&storage, Duration::from_secs(4)));
    let a = manager(&storage, vec![issuer.clone()]);
    let metered: Arc<dyn Store> = Arc::new(Metered::new(Arc::clone(&storage), "b"));
    let b = manager(&metered, vec![issuer.clone()]);
    a.manage(["r.example"]).await.unwrap();
    b.manage(["r.example"]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    a.renew_due().await;
    assert_eq!(issuer.calls(), 2, "a renewed");

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let local = metrics::set_default_local_recorder(&recorder);
    b.renew_due().await;
    drop(local);
    let operations: Vec<(String, usize)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == names::STORAGE_DURATION)
        .map(|(key, _, _, value)| {
            let operation = key
                .key()
                .labels()
                .find(|label| label.key() == "operation")
                .map(|label| label.value().to_owned())
                .unwrap_or_default();
            let count = match value {
                DebugValue::Histogram(samples) => samples.len(),
                _ => 0,
            };
            (operation, count)
        })
        .collect();
    assert_eq!(operations, vec![("load".to_owned(), 1)]);
    assert_eq!(issuer.calls(), 2, "b did not issue");
    assert_eq!(serial(&b, "r.example"), serial(&a, "r.example"));
}

/// Certificates issued together come due at moments spread over a tenth of their
/// lifetime, and every node picks about the same moment for one certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_moments_spread_per_certificate_and_agree_across_nodes() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let lifetime = Duration::from_secs(100 * 3600);
    let issuer = internal(&storage, lifetime);
    let a = manager(&storage, vec![issuer.clone()]);
    let b = manager(&storage, vec![issuer]);
    let names: Vec<String> = (0..40).map(|i| format!("batch-{i}.example")).collect();
    a.manage(&names).await.unwrap();
    b.manage(&names).await.unwrap();
    let moments: Vec<(std::time::SystemTime, std::time::SystemTime)> = names
        .iter()
        .map(|n| (a.renewal_moment(n).unwrap(), b.renewal_moment(n).unwrap()))
        .collect();
    let earliest = moments.iter().map(|m| m.0).min().unwrap();
    let latest = moments.iter().map(|m| m.0).max().unwrap();
    let spread = latest.duration_since(earliest).unwrap();
    assert!(
        spread >= lifetime / 20,
        "{spread:?}: issued together, due together"
    );
    for (on_a, on_b) in moments {
        let apart = on_a.duration_since(on_b).unwrap_or_else(|e| e.duration());
        assert!(
            apart <= lifetime / 100 + Duration::from_secs(2),
            "{apart:?}"
        );
    }
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
