//! What several suites share: certificates issued by the real engine, copying them into a
//! backend, and thin wrappers that count what the engine asks of storage and issuers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use cert_core::{
    Cache, CertManager, CertificateMeta, InternalIssuer, InternalIssuerConfig, IssueError,
    IssueRequest, Issued, Issuer, KeyInfo, Lease, Locker, ManagerConfig, MemoryStorage, Storage,
    Store, StoredCertificate,
};
use futures::{StreamExt, TryStreamExt};

use crate::BoxResult;

/// The name of the internal CA every suite issues under.
pub const CA_NAME: &str = "bench";

/// The internal CA configuration: leaves valid for 90 days, so loaded certificates are
/// never due for renewal during a run.
pub fn issuer_config() -> InternalIssuerConfig {
    InternalIssuerConfig::default()
        .with_name(CA_NAME)
        .with_leaf_lifetime(Duration::from_secs(90 * 86_400))
}

/// The server names `0..count` of a run.
pub fn names(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("host-{i}.customer-{}.example.com", i % 977))
        .collect()
}

/// Issues a certificate for each of `names` with the real engine and the internal CA,
/// into a fresh [`MemoryStorage`], which is returned. What lands in storage is exactly
/// what a node would find there.
pub async fn issue_into_memory(names: &[String]) -> BoxResult<Arc<MemoryStorage>> {
    let storage = Arc::new(MemoryStorage::new());
    let store: Arc<dyn Store> = storage.clone();
    let issuer = Arc::new(InternalIssuer::new(Arc::clone(&store), issuer_config()));
    let manager = CertManager::new(
        store,
        Arc::new(Cache::new(names.len().max(1))),
        vec![issuer],
        ManagerConfig::default(),
    );
    manager
        .manage(names)
        .await
        .map_err(|failures| format!("issuing fixtures failed: {failures}"))?;
    Ok(storage)
}

/// Copies every key below `prefixes` from `from` to `to`, `concurrency` at a time, and
/// returns how many keys were copied.
pub async fn copy(
    from: &dyn Storage,
    to: &dyn Storage,
    prefixes: &[&str],
    concurrency: usize,
) -> BoxResult<usize> {
    let mut all = Vec::new();
    for prefix in prefixes {
        all.extend(from.list(prefix, true).await?);
    }
    let count = all.len();
    futures::stream::iter(all)
        .map(|key| async move {
            let value = from.load(&key).await?;
            to.store(&key, &value).await
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(count)
}

/// The stored certificates (chain, key, metadata) of `names` under the bench CA.
pub async fn load_certificates(
    storage: &dyn Storage,
    names: &[String],
) -> BoxResult<Vec<StoredCertificate>> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let id = cert_core::record::CertificateId::new(CA_NAME, name);
        let loaded = cert_core::record::load_certificate(storage, &id)
            .await?
            .and_then(cert_core::record::RecordState::valid)
            .ok_or_else(|| format!("no usable certificate stored for {name}"))?;
        out.push(loaded.stored);
    }
    Ok(out)
}

/// How many times the engine called each storage and lock operation.
#[derive(Debug, Default)]
pub struct Counts {
    /// `load` calls (every `load_opt`, `load_json` goes through it).
    pub loads: AtomicUsize,
    /// `store` calls.
    pub stores: AtomicUsize,
    /// `list` calls.
    pub lists: AtomicUsize,
    /// `try_acquire` calls.
    pub lock_attempts: AtomicUsize,
}

impl Counts {
    fn bump(counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::Relaxed)
    }
}

/// A storage that forwards everything to `inner` and counts the calls.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    /// The counts so far.
    pub counts: Arc<Counts>,
}

impl<S> Counted<S> {
    /// Counts the calls made to `inner`.
    pub fn new(inner: S) -> Self {
        Counted {
            inner,
            counts: Arc::default(),
        }
    }
}

#[async_trait]
impl<S: Storage> Storage for Counted<S> {
    async fn store(&self, key: &str, value: &[u8]) -> cert_core::Result<()> {
        Counts::bump(&self.counts.stores);
        self.inner.store(key, value).await
    }

    async fn load(&self, key: &str) -> cert_core::Result<Vec<u8>> {
        Counts::bump(&self.counts.loads);
        self.inner.load(key).await
    }

    async fn delete(&self, key: &str) -> cert_core::Result<()> {
        self.inner.delete(key).await
    }

    async fn exists(&self, key: &str) -> cert_core::Result<bool> {
        self.inner.exists(key).await
    }

    async fn list(&self, prefix: &str, recursive: bool) -> cert_core::Result<Vec<String>> {
        Counts::bump(&self.counts.lists);
        self.inner.list(prefix, recursive).await
    }

    async fn stat(&self, key: &str) -> cert_core::Result<KeyInfo> {
        self.inner.stat(key).await
    }
}

#[async_trait]
impl<S: Locker> Locker for Counted<S> {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> cert_core::Result<Option<Lease>> {
        Counts::bump(&self.counts.lock_attempts);
        self.inner.try_acquire(name, ttl).await
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> cert_core::Result<Lease> {
        self.inner.refresh(lease, ttl).await
    }

    async fn release(&self, lease: &Lease) -> cert_core::Result<()> {
        self.inner.release(lease).await
    }

    async fn clean_expired_locks(&self) -> cert_core::Result<usize> {
        self.inner.clean_expired_locks().await
    }
}

/// An issuer that forwards to `inner` and counts issuances.
#[derive(Debug)]
pub struct CountedIssuer<I> {
    inner: I,
    /// Certificates issued so far.
    pub issued: Arc<AtomicUsize>,
}

impl<I> CountedIssuer<I> {
    /// Counts the issuances of `inner`.
    pub fn new(inner: I) -> Self {
        CountedIssuer {
            inner,
            issued: Arc::default(),
        }
    }
}

#[async_trait]
impl<I: Issuer> Issuer for CountedIssuer<I> {
    fn id(&self) -> String {
        self.inner.id()
    }

    async fn issue(&self, request: IssueRequest<'_>) -> Result<Issued, IssueError> {
        self.issued.fetch_add(1, Ordering::Relaxed);
        self.inner.issue(request).await
    }

    async fn renewal_window(
        &self,
        meta: &CertificateMeta,
        chain_pem: &str,
    ) -> Option<(SystemTime, SystemTime)> {
        self.inner.renewal_window(meta, chain_pem).await
    }
}

/// A namespace no other run uses: the process id and the time.
pub fn unique_namespace(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{tag}_{}_{nanos}", std::process::id())
}
