//! A storage for the ACME tests that records what the engine does with it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cert_core::{Error, KeyInfo, Lease, Locker, MemoryStorage, Storage, async_trait};

/// Memory storage that counts reads, records every order placed (the URLs of the order
/// records written: an order abandoned and placed again shows up there) and refuses the
/// first `refuse_saves` certificate records it is asked to store, keeping their JSON.
#[derive(Debug, Default)]
pub struct Recorder {
    inner: MemoryStorage,
    pub reads: AtomicUsize,
    /// Reads of renewal information (`acme/<issuer>/renewal-info/...`).
    pub renewal_info_reads: AtomicUsize,
    orders: std::sync::Mutex<BTreeSet<String>>,
    pub refuse_saves: AtomicUsize,
    pub refused: std::sync::Mutex<Vec<serde_json::Value>>,
}

impl Recorder {
    /// The URLs of the orders placed so far.
    pub fn orders(&self) -> BTreeSet<String> {
        self.orders.lock().unwrap().clone()
    }
}

#[async_trait]
impl Storage for Recorder {
    async fn store(&self, key: &str, value: &[u8]) -> cert_core::Result<()> {
        if key.contains("/orders/") {
            let record: serde_json::Value = serde_json::from_slice(value).unwrap();
            let url = record["url"].as_str().unwrap().to_owned();
            self.orders.lock().unwrap().insert(url);
        }
        if key.ends_with(".bundle")
            && self
                .refuse_saves
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            let bundle = serde_json::from_slice(value).unwrap();
            self.refused.lock().unwrap().push(bundle);
            return Err(Error::unavailable("test", "the storage refused this save"));
        }
        self.inner.store(key, value).await
    }
    async fn load(&self, key: &str) -> cert_core::Result<Vec<u8>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if key.contains("/renewal-info/") {
            self.renewal_info_reads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.load(key).await
    }
    async fn delete(&self, key: &str) -> cert_core::Result<()> {
        self.inner.delete(key).await
    }
    async fn exists(&self, key: &str) -> cert_core::Result<bool> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.exists(key).await
    }
    async fn list(&self, prefix: &str, recursive: bool) -> cert_core::Result<Vec<String>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix, recursive).await
    }
    async fn stat(&self, key: &str) -> cert_core::Result<KeyInfo> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.stat(key).await
    }
}

#[async_trait]
impl Locker for Recorder {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> cert_core::Result<Option<Lease>> {
        self.inner.try_acquire(name, ttl).await
    }
    async fn refresh(&self, lease: &Lease, ttl: Duration) -> cert_core::Result<Lease> {
        self.inner.refresh(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> cert_core::Result<()> {
        self.inner.release(lease).await
    }
}
