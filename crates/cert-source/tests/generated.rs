//! The generate-once store: one generation per host per store, and per fleet over a shared
//! storage (memory and files), with real ECDSA keys signed by a local CA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cert_core::{MemoryStorage, Store};
use cert_source::{GenerateError, GeneratedStore, PemBundle};
use common::TestCa;

/// A generator that counts its runs and takes `pause` on top of the real key generation.
#[derive(Clone)]
struct Minter {
    ca: Arc<TestCa>,
    runs: Arc<AtomicUsize>,
    pause: Duration,
}

impl Minter {
    fn new(pause: Duration) -> Self {
        Minter {
            ca: Arc::new(TestCa::new()),
            runs: Arc::new(AtomicUsize::new(0)),
            pause,
        }
    }

    async fn mint(&self, host: &str) -> Result<PemBundle, std::io::Error> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.pause).await;
        let (chain, key) = self.ca.leaf_for(&[host], Duration::from_secs(86_400));
        Ok(PemBundle::new(chain, key))
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_callers_for_one_host_generate_once() {
    let store = Arc::new(GeneratedStore::new(100));
    let minter = Minter::new(Duration::from_millis(50));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (store, minter) = (store.clone(), minter.clone());
        tasks.push(tokio::spawn(async move {
            store
                .fetch("busy.example", || minter.mint("busy.example"))
                .await
        }));
    }
    let mut certs = Vec::new();
    for task in tasks {
        certs.push(task.await.unwrap().unwrap());
    }
    assert_eq!(minter.runs(), 1);
    assert_eq!(store.generations(), 1);
    assert!(
        certs.iter().all(|c| Arc::ptr_eq(c, &certs[0])),
        "one certificate for all"
    );
    assert!(Arc::ptr_eq(&store.get("BUSY.example").unwrap(), &certs[0]));
}

#[tokio::test]
async fn failures_are_not_cached() {
    let store = GeneratedStore::new(10);
    let minter = Minter::new(Duration::ZERO);
    let err = store
        .fetch("f.example", || async { Err::<PemBundle, _>("CA offline") })
        .await
        .unwrap_err();
    assert!(matches!(err, GenerateError::Generate("CA offline")));
    assert!(store.get("f.example").is_none());

    let err = store
        .fetch("f.example", || async {
            Ok::<_, std::io::Error>(PemBundle::new("garbage", "garbage"))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, GenerateError::Certificate(_)), "{err:?}");
    assert!(store.get("f.example").is_none());

    store
        .fetch("f.example", || minter.mint("f.example"))
        .await
        .unwrap();
    store
        .fetch("f.example", || minter.mint("f.example"))
        .await
        .unwrap();
    assert_eq!(minter.runs(), 1);
    assert_eq!(
        store.generations(),
        3,
        "every failure let the next caller try"
    );

    let err = store
        .fetch("bad host/..", || minter.mint("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, GenerateError::InvalidHost(_)));
    assert_eq!(minter.runs(), 1);
}

#[tokio::test]
async fn memory_is_bounded_by_capacity() {
    let store = GeneratedStore::new(5);
    let minter = Minter::new(Duration::ZERO);
    for i in 0..20 {
        let host = format!("h{i}.example");
        store.fetch(&host, || minter.mint(&host)).await.unwrap();
        assert!(store.len() <= 5);
    }
    assert_eq!(store.len(), 5);
    assert_eq!(store.capacity(), 5);
    assert_eq!(minter.runs(), 20);
    // An evicted host is generated again.
    let evicted = (0..20)
        .map(|i| format!("h{i}.example"))
        .find(|h| store.get(h).is_none())
        .unwrap();
    store
        .fetch(&evicted, || minter.mint(&evicted))
        .await
        .unwrap();
    assert_eq!(minter.runs(), 21);
}

/// Two stores over one storage, each with many callers for the same hosts at once.
async fn fleet_generates_once(a: GeneratedStore, b: GeneratedStore, storage: Arc<dyn Store>) {
    let (a, b) = (Arc::new(a), Arc::new(b));
    let minter = Minter::new(Duration::from_millis(30));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let minter = minter.clone();
        let host = format!("h{}.example", i % 3);
        tasks.push(tokio::spawn(async move {
            let cert = store.fetch(&host, || minter.mint(&host)).await.unwrap();
            (host, cert.cert[0].to_vec())
        }));
    }
    let mut leaves = std::collections::HashMap::new();
    for task in tasks {
        let (host, leaf) = task.await.unwrap();
        let first = leaves.entry(host).or_insert_with(|| leaf.clone());
        assert!(
            *first == leaf,
            "both stores serve the one generated certificate"
        );
    }
    assert_eq!(minter.runs(), 3, "one generation per host across the fleet");
    assert_eq!(a.generations() + b.generations(), 3);
    for i in 0..3 {
        let key = a.storage_key(&format!("h{i}.example"));
        assert_eq!(key, format!("generated/h{i}.example/h{i}.example.pem"));
        assert!(storage.exists(&key).await.unwrap());
    }

    // A third store over the same storage loads instead of generating.
    let c = GeneratedStore::new(10).with_storage(storage);
    c.fetch("h0.example", || minter.mint("h0.example"))
        .await
        .unwrap();
    assert_eq!(minter.runs(), 3);
    assert_eq!(c.generations(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_over_shared_memory_generate_once() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let a = GeneratedStore::new(100).with_storage(storage.clone());
    let b = GeneratedStore::new(100).with_storage(storage.clone());
    fleet_generates_once(a, b, storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_over_one_directory_generate_once() {
    let dir = tempfile::tempdir().unwrap();
    // Two file storages on one directory, as two processes would have.
    let a =
        GeneratedStore::new(100).with_storage(Arc::new(cert_file::FileStorage::new(dir.path())));
    let b =
        GeneratedStore::new(100).with_storage(Arc::new(cert_file::FileStorage::new(dir.path())));
    let storage: Arc<dyn Store> = Arc::new(cert_file::FileStorage::new(dir.path()));
    fleet_generates_once(a, b, storage).await;
}

#[tokio::test]
async fn unusable_stored_copies_are_generated_anew() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let store = GeneratedStore::new(10).with_storage(storage.clone());
    let minter = Minter::new(Duration::ZERO);
    let key = store.storage_key("x.example");

    // Expired, for another host, and garbage: each is replaced by a fresh generation.
    let expired = minter.ca.expired_bundle(&["x.example"]);
    let other = minter.ca.bundle(&["y.example"]);
    for (i, stored) in [expired, other, "garbage".to_owned()]
        .into_iter()
        .enumerate()
    {
        storage.store(&key, stored.as_bytes()).await.unwrap();
        store.remove("x.example");
        store
            .fetch("x.example", || minter.mint("x.example"))
            .await
            .unwrap();
        assert_eq!(minter.runs(), i + 1);
        let now_stored = String::from_utf8(storage.load(&key).await.unwrap()).unwrap();
        assert_ne!(now_stored, stored);
        assert!(now_stored.contains("PRIVATE KEY"));
    }
}

#[tokio::test]
async fn an_expired_certificate_is_generated_anew() {
    let store = GeneratedStore::new(10);
    let ca = TestCa::new();
    let runs = AtomicUsize::new(0);
    let mint = || async {
        runs.fetch_add(1, Ordering::SeqCst);
        let (chain, key) = ca.leaf_for(&["short.example"], Duration::from_secs(2));
        Ok::<_, std::io::Error>(PemBundle::new(chain, key))
    };
    let first = store.fetch("short.example", mint).await.unwrap();
    let again = store.fetch("short.example", mint).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert!(
        store.get("short.example").is_none(),
        "an expired certificate is not handed out"
    );
    let fresh = store.fetch("short.example", mint).await.unwrap();
    assert!(!Arc::ptr_eq(&first, &fresh));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(store.generations(), 2);
}
