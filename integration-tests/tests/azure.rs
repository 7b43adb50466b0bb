//! The conformance suite on Azure Blob storage, against the Azurite emulator (or an
//! account) named by `CERTSTORE_TEST_AZURE_URL` (skipped loudly when it is not set), plus a
//! lease takeover race and a fault test against a private Azurite.
#![allow(clippy::unwrap_used)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cert_azure::{AzureStorage, RetryConfig};
use cert_conformance::{Capabilities, conformance_tests};
use cert_core::{Error, Locker, Storage};

const VAR: &str = "CERTSTORE_TEST_AZURE_URL";
const CONTAINER: &str = "certstore-tests";

fn azure_url() -> String {
    integration_tests::service_url(VAR).unwrap_or_default()
}

/// Creates the shared test container unless it exists.
async fn ensure_container(url: &str) {
    AzureStorage::azurite(url, CONTAINER)
        .unwrap()
        .create_container_if_missing()
        .await
        .unwrap();
}

/// One shared container, a prefix per test namespace. The emulator is one Node thread:
/// on a machine busy with other work it can stall for longer than a production request
/// timeout, so tests wait for its answers longer than the default 30 s.
async fn open(ns: &str) -> AzureStorage {
    let url = azure_url();
    ensure_container(&url).await;
    AzureStorage::azurite(&url, CONTAINER)
        .unwrap()
        .with_retry(
            cert_azure::RetryConfig::default().with_request_timeout(Duration::from_secs(120)),
        )
        .with_prefix(ns)
        .unwrap()
}

/// The slow round trip of a lock operation on the emulator right now (zero without
/// one), measured once per process: lock timings in these tests follow it, so a busy
/// machine makes them slower, not flaky.
fn lock_latency() -> Duration {
    static LATENCY: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *LATENCY.get_or_init(|| {
        if integration_tests::service_url(VAR).is_none() {
            return Duration::ZERO;
        }
        // On a thread of its own: the caller may be inside a runtime (a `#[tokio::test]`)
        // or not (the conformance macro asks for capabilities before starting one).
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let storage = open(&integration_tests::unique_name("latency")).await;
                cert_conformance::measure_lock_latency(&storage).await
            })
        })
        .join()
        .unwrap()
    })
}

conformance_tests! {
    open: |ns: String| async move { open(&ns).await },
    capabilities: Capabilities::default()
        .with_lock_latency(lock_latency())
        .with_min_lock_ttl(cert_azure::MIN_LEASE)
        .with_lock_expiry_slack(Duration::from_millis(500))
        // Last-Modified is an HTTP date: whole seconds.
        .with_timestamp_resolution(Duration::from_secs(1))
        // More than one page of List Blobs (5,000 names) with each listing, without the
        // single-threaded emulator spending minutes on 10,000 writes.
        .with_list_keys(6_000)
        // An emulator on a busy machine may take minutes over the largest cases.
        .with_case_timeout(Duration::from_secs(600))
        .without_fenced_writes(),
    enabled: || integration_tests::service_url(VAR).is_some(),
}

/// Several rounds: a holder takes a 15 s lease and vanishes; 12 waiters over three
/// instances race for it; exactly one wins each round, never before the lease ran out.
#[tokio::test]
async fn lease_takeover_race_has_one_winner() {
    if integration_tests::service_url(VAR).is_none() {
        return;
    }
    let ns = integration_tests::unique_name("takeover");
    let stores: Vec<Arc<AzureStorage>> = vec![
        Arc::new(open(&ns).await),
        Arc::new(open(&ns).await),
        Arc::new(open(&ns).await),
    ];
    // Under load a waiter's poll takes longer: the window for the takeover and the
    // winner's lease (which must outlast the other waiters' last polls) follow the
    // emulator's latency, within what a blob lease allows.
    let scaled = lock_latency() * Capabilities::LATENCY_FACTOR;
    let window = Duration::from_secs(3).max(scaled);
    let winner_ttl = (window * 4).clamp(Duration::from_secs(30), cert_azure::MAX_LEASE);
    for round in 0..3 {
        let name = format!("race/{round}");
        let before = Instant::now();
        let abandoned = stores[0]
            .try_acquire(&name, Duration::from_millis(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(abandoned.ttl(), cert_azure::MIN_LEASE);
        let give_up = before + cert_azure::MIN_LEASE + window;
        let mut waiters = Vec::new();
        for w in 0..12 {
            let store = Arc::clone(&stores[w % stores.len()]);
            let name = name.clone();
            waiters.push(tokio::spawn(async move {
                let mut wins = Vec::new();
                while Instant::now() < give_up {
                    if let Some(lease) = store.try_acquire(&name, winner_ttl).await.unwrap() {
                        wins.push((Instant::now(), lease));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                wins
            }));
        }
        let mut winners = Vec::new();
        for waiter in waiters {
            winners.extend(waiter.await.unwrap());
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: expected exactly one winner, got {:?}",
            winners
                .iter()
                .map(|(at, _)| *at - before)
                .collect::<Vec<_>>()
        );
        let (won_at, lease) = winners.remove(0);
        assert!(
            won_at >= before + cert_azure::MIN_LEASE,
            "round {round}: taken over {:?} after acquisition, before the lease ran out",
            won_at - before
        );
        assert!(matches!(
            stores[1].release(&abandoned).await,
            Err(Error::LockLost { .. })
        ));
        // On a stalling emulator the waiters' last polls can outlast even the winner's
        // lease (it is never refreshed here): only then may its release find it lost.
        match stores[2].release(&lease).await {
            Ok(()) => {}
            Err(Error::LockLost { .. }) if lease.is_expired() => {}
            Err(err) => panic!("round {round}: release of the winner's live lease: {err:?}"),
        }
    }
}

/// A private Azurite on its own port, killed when dropped.
struct PrivateAzurite {
    child: Option<Child>,
    port: u16,
}

fn azurite_bin() -> Option<PathBuf> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = here.join("services/.run/azurite/node_modules/.bin/azurite-blob");
    bin.exists().then_some(bin)
}

impl PrivateAzurite {
    fn start(bin: &PathBuf, port: u16) -> Self {
        let child = Command::new(bin)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "private azurite did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        PrivateAzurite {
            child: Some(child),
            port,
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateAzurite {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stopping the server mid-run gives `Unavailable` within the retry bound (no panic, no
/// hang); starting it again, the same storage works.
#[tokio::test]
async fn server_down_is_unavailable_then_recovers() {
    if integration_tests::service_url(VAR).is_none() {
        return;
    }
    let Some(bin) = azurite_bin() else {
        assert!(
            !integration_tests::services_required(),
            "azurite is not installed: run integration-tests/services/start.d/azurite.sh"
        );
        eprintln!("SKIPPED: azurite is not installed under integration-tests/services/.run");
        return;
    };
    let port = 10_000 + (std::process::id() % 1000) as u16 + 17;
    let url = format!("http://127.0.0.1:{port}/devstoreaccount1");
    let mut server = PrivateAzurite::start(&bin, port);
    let retry = RetryConfig::default()
        .with_attempts(4)
        .with_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .with_request_timeout(Duration::from_secs(2));
    let storage = AzureStorage::azurite(&url, "fault")
        .unwrap()
        .with_retry(retry);
    storage.create_container_if_missing().await.unwrap();
    storage.store("a/b", b"before").await.unwrap();
    let lease = storage
        .try_acquire("l", Duration::from_secs(20))
        .await
        .unwrap()
        .unwrap();

    server.stop();
    let bound = retry.bound() + Duration::from_secs(2);
    for (what, result) in [
        (
            "store",
            tokio::time::timeout(bound, storage.store("a/c", b"x"))
                .await
                .map(|r| r.map(|_| ())),
        ),
        (
            "load",
            tokio::time::timeout(bound, storage.load("a/b"))
                .await
                .map(|r| r.map(|_| ())),
        ),
        (
            "list",
            tokio::time::timeout(bound, storage.list("a", true))
                .await
                .map(|r| r.map(|_| ())),
        ),
        (
            "refresh",
            tokio::time::timeout(bound, storage.refresh(&lease, lease.ttl()))
                .await
                .map(|r| r.map(|_| ())),
        ),
    ] {
        match result {
            Ok(Err(Error::Unavailable { backend, .. })) => assert_eq!(backend, "azure", "{what}"),
            Ok(other) => panic!("{what} with the server down: expected Unavailable, got {other:?}"),
            Err(_) => panic!("{what} hung past the retry bound {bound:?}"),
        }
    }

    // In-memory persistence: the restarted server is empty, but the same storage works.
    let _server = PrivateAzurite::start(&bin, port);
    storage.create_container_if_missing().await.unwrap();
    storage.store("a/b", b"after").await.unwrap();
    assert_eq!(storage.load("a/b").await.unwrap(), b"after");
    assert_eq!(
        storage.list("a", true).await.unwrap(),
        vec!["a/b".to_owned()]
    );
    let lease = storage
        .try_acquire("l", Duration::from_secs(20))
        .await
        .unwrap()
        .unwrap();
    storage.release(&lease).await.unwrap();
}

/// A wrong account key is refused without retries, and the error names the credential
/// kind but shows no secret.
#[tokio::test]
async fn wrong_key_is_an_auth_error() {
    if integration_tests::service_url(VAR).is_none() {
        return;
    }
    let url = azure_url();
    ensure_container(&url).await;
    let storage =
        AzureStorage::with_account_key(&url, CONTAINER, "devstoreaccount1", "d3Jvbmcga2V5")
            .unwrap();
    let started = Instant::now();
    let err = storage.load("anything").await.unwrap_err();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(inner) = source {
        text.push_str(&format!(" / {inner}"));
        source = inner.source();
    }
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(text.contains("account key"), "{text}");
    assert!(
        !text.contains("sig=") || text.contains("sig=REDACTED"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "auth failures must not be retried"
    );
}
