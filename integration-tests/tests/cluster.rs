//! Clusters of certificate engines sharing one storage: three managers, each with its own
//! storage instance (its own handles or connections) over the same data, manage the same
//! names at once; every name must be issued exactly once and served by every node. Runs on
//! memory and files, and on every server backend (Redis, PostgreSQL, MariaDB, S3, Azure
//! Blob) named by the `CERTSTORE_TEST_*` variables.
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
    cluster_on((0..nodes).map(|_| open()).collect(), names).await;
}

/// Runs one manager on each of `stores` (separate instances over the same data).
async fn cluster_on(stores: Vec<Arc<dyn Store>>, names: usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let names: Vec<String> = (0..names).map(|i| format!("n{i}.cluster.test")).collect();
    let managers: Vec<CertManager> = stores
        .into_iter()
        .map(|storage| {
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
            panic!("{failures}");
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

const NODES: usize = 3;
/// Fewer names on servers than in memory: every name costs several round trips per node.
const SERVER_NAMES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_three_nodes() {
    let Some(url) = integration_tests::service_url("CERTSTORE_TEST_REDIS_URL") else {
        return;
    };
    let ns = integration_tests::unique_name("cluster");
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..NODES {
        stores.push(Arc::new(
            cert_redis::RedisStorage::connect(&url, &ns).await.unwrap(),
        ));
    }
    cluster_on(stores, SERVER_NAMES).await;
}

async fn sql_cluster(var: &str) {
    let Some(url) = integration_tests::service_url(var) else {
        return;
    };
    let ns = integration_tests::unique_name("cluster");
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..NODES {
        let config = cert_sql::SqlConfig::default()
            .with_table_prefix("certstore_cluster")
            .with_namespace(ns.clone())
            .with_max_connections(4);
        stores.push(Arc::new(
            cert_sql::SqlStorage::connect_with(&url, config)
                .await
                .unwrap(),
        ));
    }
    cluster_on(stores, SERVER_NAMES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_three_nodes() {
    sql_cluster("CERTSTORE_TEST_POSTGRES_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_three_nodes() {
    sql_cluster("CERTSTORE_TEST_MYSQL_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_three_nodes() {
    let Some(endpoint) = integration_tests::service_url("CERTSTORE_TEST_S3_URL") else {
        return;
    };
    let prefix = integration_tests::unique_name("cluster");
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..NODES {
        let config = cert_s3::S3Config::new("certstore-tests")
            .with_prefix(&prefix)
            .with_region("us-east-1")
            .with_endpoint(&endpoint)
            .with_path_style(true)
            .with_static_credentials("certstore", "certstore-secret", None);
        let storage = cert_s3::S3Storage::connect(config).await.unwrap();
        storage.ensure_bucket().await.unwrap();
        stores.push(Arc::new(storage));
    }
    cluster_on(stores, SERVER_NAMES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_three_nodes() {
    let Some(url) = integration_tests::service_url("CERTSTORE_TEST_AZURE_URL") else {
        return;
    };
    let prefix = integration_tests::unique_name("cluster");
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..NODES {
        let storage = cert_azure::AzureStorage::azurite(&url, "certstore-tests").unwrap();
        storage.create_container_if_missing().await.unwrap();
        stores.push(Arc::new(storage.with_prefix(&prefix).unwrap()));
    }
    cluster_on(stores, SERVER_NAMES).await;
}
