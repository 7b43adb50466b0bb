//! ACME issuance end to end against Pebble (the Debian `pebble` package), with real
//! validation: HTTP-01, TLS-ALPN-01 and DNS-01 (wildcard) answered by the engine, a
//! three-node cluster, on-demand TLS and a CA outage. Each test starts its own Pebble and
//! pebble-challtestsrv on free ports, with Pebble's default settings (some nonces
//! rejected, validation delayed, authorizations reused), as a real CA behaves. Needs
//! `CERTSTORE_TEST_PEBBLE` (the pebble binary).
#![allow(clippy::unwrap_used, missing_docs)]

mod pebble;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cert_core::challenge::{ChallengeType, Challenges};
use cert_core::{
    AcmeIssuer, Cache, CertManager, Event, MemoryStorage, OnDemandConfig, Storage, Store,
};
use pebble::*;

async fn single_type(ty: ChallengeType, name: &str) {
    let Some(pebble) = Pebble::start().await else {
        return;
    };
    pebble::metrics::recorded(); // from here on
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let n = node(&storage, &pebble, &[ty]);
    let _http = serve_http(
        bind(pebble.http_port).await,
        vec![Arc::clone(&n.challenges)],
    );
    let _tls = serve_tls(
        bind(pebble.tls_port).await,
        vec![(n.manager.clone(), Arc::clone(&n.challenges))],
    );
    n.manager.manage([name]).await.unwrap();
    let roots = pebble.issuing_root().await;
    let probe = if let Some(base) = name.strip_prefix("*.") {
        format!("www.{base}")
    } else {
        name.to_owned()
    };
    assert_eq!(
        handshake(pebble.tls_port, &probe, roots).await.unwrap(),
        "hello"
    );
    // Challenge data is gone from storage afterwards.
    assert!(
        storage
            .list("challenges", true)
            .await
            .map(|l| l.is_empty())
            .unwrap_or(true)
    );
    // The account was stored once, beside the record of the one order placed.
    let acme = storage.list("acme", true).await.unwrap();
    assert_eq!(
        acme.iter().filter(|k| k.contains("/accounts/")).count(),
        1,
        "{acme:?}"
    );
    assert_eq!(
        acme.iter().filter(|k| k.contains("/orders/")).count(),
        1,
        "{acme:?}"
    );
    assert_eq!(acme.len(), 2, "{acme:?}");
    // The metrics saw the order, its challenge and the CA's answers.
    let seen = pebble::metrics::recorded();
    let orders = cert_core::metrics::names::ACME_ORDERS;
    assert_eq!(seen.counter(orders, &[("outcome", "valid")]), 1);
    let challenges = cert_core::metrics::names::ACME_CHALLENGES;
    let valid = [("type", ty.as_str()), ("outcome", "valid")];
    assert!(seen.counter(challenges, &valid) >= 1);
    let answered = cert_core::metrics::names::ACME_REQUEST_DURATION;
    assert!(seen.samples(answered, &[("status", "2xx")]).len() >= 5);
    let obtained = cert_core::metrics::names::CERTIFICATES_OBTAINED;
    assert_eq!(
        seen.counter(obtained, &[("issuer", &n.manager.issuer_ids()[0])]),
        1
    );
    // Revocation of the managed certificate; revoking it twice is refused for good.
    n.issuer.revoke_managed(name, Some(4)).await.unwrap();
    let again = n.issuer.revoke_managed(name, Some(4)).await.unwrap_err();
    assert!(!again.is_retryable(), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_certificate() {
    single_type(ChallengeType::Http01, "http01.example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_certificate() {
    single_type(ChallengeType::TlsAlpn01, "alpn.example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns01_wildcard_certificate() {
    single_type(ChallengeType::Dns01, "*.wild.example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_of_three_orders_each_name_once() {
    let Some(pebble) = Pebble::start().await else {
        return;
    };
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let nodes: Vec<Node> = (0..3)
        .map(|_| node(&storage, &pebble, &[ChallengeType::Http01]))
        .collect();
    // The load balancer sends each validation to the next node: mostly not the one that
    // placed the order.
    let _http = serve_http(
        bind(pebble.http_port).await,
        nodes.iter().map(|n| Arc::clone(&n.challenges)).collect(),
    );
    let _tls = serve_tls(
        bind(pebble.tls_port).await,
        nodes
            .iter()
            .map(|n| (n.manager.clone(), Arc::clone(&n.challenges)))
            .collect(),
    );
    let mut receivers: Vec<_> = nodes.iter().map(|n| n.manager.subscribe()).collect();
    let names: Vec<String> = (0..30)
        .map(|i| format!("n{i}.cluster.example.com"))
        .collect();
    let results =
        futures::future::join_all(nodes.iter().map(|n| n.manager.manage(names.clone()))).await;
    for result in results {
        result.unwrap();
    }
    let orders: usize = receivers.iter_mut().map(count_obtained).sum();
    assert_eq!(orders, 30, "exactly one order per name");
    let roots = pebble.issuing_root().await;
    for name in &names {
        for node in &nodes {
            assert!(node.manager.cache().get(name).is_some(), "{name}");
        }
        for _ in 0..3 {
            assert_eq!(
                handshake(pebble.tls_port, name, roots.clone())
                    .await
                    .unwrap(),
                "hello"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_storm() {
    let Some(pebble) = Pebble::start().await else {
        return;
    };
    let counting = Arc::new(Recorder::default());
    let storage: Arc<dyn Store> = counting.clone();
    let n = node(&storage, &pebble, &[ChallengeType::Http01]);
    n.manager.enable_on_demand(
        OnDemandConfig::default()
            .with_decision(|name: String| async move { name.ends_with(".allowed.example.com") })
            .with_rate_limit(5, Duration::from_secs(60))
            .with_handshake_timeout(Duration::from_secs(60)),
    );
    let _http = serve_http(
        bind(pebble.http_port).await,
        vec![Arc::clone(&n.challenges)],
    );
    let _tls = serve_tls(
        bind(pebble.tls_port).await,
        vec![(n.manager.clone(), Arc::clone(&n.challenges))],
    );
    let mut rx = n.manager.subscribe();
    let roots = pebble.issuing_root().await;

    let storm = |name: &'static str| {
        let roots = roots.clone();
        futures::future::join_all(
            (0..500).map(move |_| handshake(pebble.tls_port, name, roots.clone())),
        )
    };
    let denied = storm("x.denied.example.com").await;
    assert!(denied.iter().all(Result::is_err));
    assert_eq!(
        counting.reads.load(Ordering::SeqCst),
        0,
        "a denied name reads nothing"
    );
    assert_eq!(count_obtained(&mut rx), 0);

    let allowed = storm("www.allowed.example.com").await;
    let failures: Vec<_> = allowed
        .iter()
        .filter(|r| r.as_deref() != Ok("hello"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(count_obtained(&mut rx), 1, "one order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_outage_keeps_serving_and_recovers() {
    let Some(mut pebble) = Pebble::start().await else {
        return;
    };
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let first = node(&storage, &pebble, &[ChallengeType::Http01]);
    let _http = serve_http(
        bind(pebble.http_port).await,
        vec![Arc::clone(&first.challenges)],
    );
    let name = "outage.example.com";
    first.manager.manage([name]).await.unwrap();
    let old_roots = pebble.issuing_root().await;

    // A second engine that renews at once (every certificate is due for it).
    let challenges = Challenges::new(Arc::clone(&storage));
    let issuer = Arc::new(AcmeIssuer::new(
        Arc::clone(&storage),
        Arc::clone(&challenges),
        acme_config(&pebble, &[ChallengeType::Http01]),
    ));
    let mut config = manager_config();
    config.renew_ratio = 1.0;
    let renewer = CertManager::new(
        Arc::clone(&storage),
        Arc::new(Cache::new(100)),
        vec![issuer],
        config,
    );
    let _tls = serve_tls(
        bind(pebble.tls_port).await,
        vec![(renewer.clone(), challenges)],
    );
    let mut rx = renewer.subscribe();

    pebble.stop_ca();
    // Loaded and due; renewal fails, the old certificate is served.
    renewer.manage([name]).await.unwrap();
    assert_eq!(
        handshake(pebble.tls_port, name, old_roots.clone())
            .await
            .unwrap(),
        "hello"
    );
    let mut backoff = None;
    while let Ok(event) = rx.try_recv() {
        if let Event::Failed {
            retry_in: Some(retry),
            ..
        } = event
        {
            backoff = Some(retry);
        }
    }
    assert!(backoff.is_some(), "the engine backs off");
    // Within the backoff nothing is attempted.
    renewer.renew_due().await;
    assert_eq!(count_obtained(&mut rx), 0);

    pebble.start_ca().await;
    let new_roots = pebble.issuing_root().await;
    let mut renewed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        renewer.renew_due().await;
        if count_obtained(&mut rx) > 0 {
            renewed = true;
            break;
        }
    }
    assert!(renewed, "renewed after the CA returned");
    assert_eq!(
        handshake(pebble.tls_port, name, new_roots).await.unwrap(),
        "hello"
    );
}
