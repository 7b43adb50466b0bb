//! Clusters of certificate engines sharing one storage: three managers, each with its own
//! storage instance (its own handles or connections) over the same data, manage the same
//! names at once; every name must be issued exactly once and served by every node.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cert_core::{
    Cache, CertManager, InternalIssuer, InternalIssuerConfig, IssueError, IssueRequest, Issued,
    Issuer, LockOptions, ManagerConfig, Store, async_trait,
};

/// The internal CA, counting issuances across the cluster.
struct Counting {
    inner: InternalIssuer,
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl Issuer for Counting {
    fn id(&self) -> String {
        self.inner.id()
    }
    async fn issue(&self, request: IssueRequest<'_>) -> Result<Issued, IssueError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.issue(request).await
    }
}

/// Runs `nodes` managers, each on the store `open()` returns, over `names` names.
async fn cluster<F>(open: F, nodes: usize, names: usize)
where
    F: Fn() -> Arc<dyn Store>,
{
    let calls = Arc::new(AtomicUsize::new(0));
    let names: Vec<String> = (0..names).map(|i| format!("n{i}.cluster.test")).collect();
    let managers: Vec<CertManager> = (0..nodes)
        .map(|_| {
            let storage = open();
            let issuer: Arc<dyn Issuer> = Arc::new(Counting {
                inner: InternalIssuer::new(Arc::clone(&storage), InternalIssuerConfig::default()),
                calls: Arc::clone(&calls),
            });
            let config = ManagerConfig::default().with_lock(
                LockOptions::default()
                    .with_ttl(Duration::from_secs(10))
                    .with_backoff(Duration::from_millis(2), Duration::from_millis(50)),
            );
            CertManager::new(storage, Arc::new(Cache::new(1000)), vec![issuer], config)
        })
        .collect();
    let runs = managers.iter().map(|manager| {
        let manager = manager.clone();
        let names = names.clone();
        tokio::spawn(async move { manager.manage(names).await })
    });
    for run in futures::future::join_all(runs).await {
        if let Err(failures) = run.unwrap() {
            panic!("manage failed: {failures:?}");
        }
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        names.len(),
        "exactly one issuance per name across the cluster"
    );
    for name in &names {
        let serials: Vec<String> = managers
            .iter()
            .map(|m| {
                assert!(m.cache().get(name).is_some(), "{name} served by every node");
                m.certificate_meta(name).unwrap().serial
            })
            .collect();
        assert!(
            serials.iter().all(|s| s == &serials[0]),
            "{name}: one certificate"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_three_nodes_fifty_names() {
    let shared = cert_core::MemoryStorage::new();
    cluster(move || Arc::new(shared.clone()), 3, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_three_nodes_fifty_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    cluster(move || Arc::new(cert_file::FileStorage::new(&root)), 3, 50).await;
}
