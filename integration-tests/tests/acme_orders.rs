//! ACME orders where a real CA makes them hard, against Pebble: most nonces rejected,
//! validation slower than half the order's deadline, and a certificate the CA issued that
//! the node failed to save. Every test counts the orders placed through the order records
//! written to storage: an order abandoned and placed again shows up there.
#![allow(clippy::unwrap_used, missing_docs)]

mod pebble;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cert_core::challenge::{ChallengeType, Challenges, Http01Handler};
use cert_core::record::{CertificateId, load_certificate};
use cert_core::{Event, Storage, Store};
use pebble::*;
use tokio::net::TcpListener;

/// With 30% of nonces rejected (each request then fails three times in a row at 2.7%),
/// every name gets one certificate from one order: failed requests are retried at their
/// step, never by placing the order again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn most_nonces_rejected_still_one_order_per_name() {
    let Some(pebble) = Pebble::start_with(&[("PEBBLE_WFE_NONCEREJECT", "30")]).await else {
        return;
    };
    let log = Arc::new(Recorder::default());
    let storage: Arc<dyn Store> = log.clone();
    let nodes: Vec<Node> = (0..2)
        .map(|_| node(&storage, &pebble, &[ChallengeType::Http01]))
        .collect();
    let _http = serve_http(
        bind(pebble.http_port).await,
        nodes.iter().map(|n| Arc::clone(&n.challenges)).collect(),
    );
    let mut receivers: Vec<_> = nodes.iter().map(|n| n.manager.subscribe()).collect();
    let names: Vec<String> = (0..6).map(|i| format!("n{i}.nonces.example.com")).collect();
    let results =
        futures::future::join_all(nodes.iter().map(|n| n.manager.manage(names.clone()))).await;
    for result in results {
        result.unwrap();
    }
    let obtained: usize = receivers.iter_mut().map(count_obtained).sum();
    assert_eq!(obtained, names.len(), "one certificate per name");
    assert_eq!(
        log.orders().len(),
        names.len(),
        "one order per name: none abandoned and placed again"
    );
    for name in &names {
        for node in &nodes {
            assert!(node.manager.cache().get(name).is_some(), "{name}");
        }
    }
}

/// Serves HTTP-01 from `challenges`, answering each validation only after `delay`.
fn serve_http_slowly(listener: TcpListener, challenges: Arc<Challenges>, delay: Duration) {
    let handler = Http01Handler::new(challenges);
    let inner = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    inner.set_nonblocking(true).unwrap();
    let addr = inner.local_addr().unwrap();
    handler.serve(TcpListener::from_std(inner).unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(addr).await {
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
                }
            });
        }
    });
}

/// Validation that takes 6 s of a 7.5 s order deadline: the poll loop keeps polling at
/// most 2 s apart and once more at the deadline, so the order succeeds at the first try
/// (a loop whose pause grows without a cap would have stopped after ~4.9 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_slower_than_half_the_deadline_succeeds() {
    let Some(pebble) = Pebble::start_with(&[("PEBBLE_VA_NOSLEEP", "1")]).await else {
        return;
    };
    let log = Arc::new(Recorder::default());
    let storage: Arc<dyn Store> = log.clone();
    let config = acme_config(&pebble, &[ChallengeType::Http01])
        .with_order_timeout(Duration::from_millis(7500))
        .with_retries(1, Duration::from_millis(100));
    let Node {
        manager,
        challenges,
        ..
    } = node_with(&storage, &pebble, config);
    serve_http_slowly(
        bind(pebble.http_port).await,
        Arc::clone(&challenges),
        Duration::from_secs(6),
    );
    let started = std::time::Instant::now();
    manager.manage(["slow.example.com"]).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "validation was slowed"
    );
    assert!(manager.cache().get("slow.example.com").is_some());
    assert_eq!(log.orders().len(), 1, "one order, at the first try");
    assert!(
        storage.list("challenges", true).await.unwrap().is_empty(),
        "challenge data removed once the authorization was valid"
    );
}

/// A node gets its certificate from the CA and then fails to save it (the storage
/// refuses, as it would if the process died at that moment). Another node, taking over,
/// resumes the same order with the same key and saves the very certificate the CA issued:
/// nothing is ordered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issued_certificate_that_was_not_saved_is_resumed_not_ordered_again() {
    let Some(pebble) = Pebble::start().await else {
        return;
    };
    let log = Arc::new(Recorder::default());
    log.refuse_saves.store(1, Ordering::SeqCst);
    let storage: Arc<dyn Store> = log.clone();
    let first = node(&storage, &pebble, &[ChallengeType::Http01]);
    let second = node(&storage, &pebble, &[ChallengeType::Http01]);
    let _http = serve_http(
        bind(pebble.http_port).await,
        vec![
            Arc::clone(&first.challenges),
            Arc::clone(&second.challenges),
        ],
    );
    let name = "resumed.example.com";
    let mut events = first.manager.subscribe();
    first.manager.manage([name]).await.unwrap_err();
    assert!(first.manager.cache().get(name).is_none());
    let refused = log.refused.lock().unwrap().clone();
    assert_eq!(refused.len(), 1, "the first save was refused");
    let issued_serial = refused[0]["meta"]["serial"].as_str().unwrap().to_owned();
    assert!(
        std::iter::from_fn(|| events.try_recv().ok()).any(|e| matches!(e, Event::Failed { .. })),
        "the failure was reported"
    );
    assert!(
        !storage.list("pending", true).await.unwrap().is_empty(),
        "the issuance key waits for the next attempt"
    );

    // The fleet backs the name off for a moment after the first node's failure.
    let mut result = second.manager.manage([name]).await;
    for _ in 0..20 {
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        result = second.manager.manage([name]).await;
    }
    result.unwrap();
    assert!(second.manager.cache().get(name).is_some());
    let saved = load_certificate(
        storage.as_ref(),
        &CertificateId::new(&pebble.directory(), name),
    )
    .await
    .unwrap()
    .and_then(|state| state.valid())
    .unwrap();
    assert_eq!(
        saved.stored.meta.serial, issued_serial,
        "the certificate the CA issued first is the one saved"
    );
    assert_eq!(
        log.orders().len(),
        1,
        "the order was resumed, not placed again"
    );
    assert!(
        storage.list("pending", true).await.unwrap().is_empty(),
        "the issuance key is removed once its certificate is saved"
    );
}
