//! [`SharedStore`]: a storage chosen at run time as a value generic wrappers can wrap.

use std::sync::Arc;

use async_trait::async_trait;
use cert_core::{KeyInfo, Lease, Locker, Result as CoreResult, Storage, Store};

/// Any `Arc<dyn Store>` as a `Storage + Locker` value, so generic wrappers such as
/// `Encrypted<S>` can wrap a storage chosen at run time.
#[derive(Debug, Clone)]
pub struct SharedStore(pub Arc<dyn Store>);

#[async_trait]
impl Storage for SharedStore {
    async fn store(&self, key: &str, value: &[u8]) -> CoreResult<()> {
        self.0.store(key, value).await
    }
    async fn load(&self, key: &str) -> CoreResult<Vec<u8>> {
        self.0.load(key).await
    }
    async fn delete(&self, key: &str) -> CoreResult<()> {
        self.0.delete(key).await
    }
    async fn exists(&self, key: &str) -> CoreResult<bool> {
        self.0.exists(key).await
    }
    async fn list(&self, prefix: &str, recursive: bool) -> CoreResult<Vec<String>> {
        self.0.list(prefix, recursive).await
    }
    async fn stat(&self, key: &str) -> CoreResult<KeyInfo> {
        self.0.stat(key).await
    }
    // Fenced writes must reach the backend's own fence, not the trait's default.
    async fn store_fenced(&self, key: &str, value: &[u8], lease: &Lease) -> CoreResult<()> {
        self.0.store_fenced(key, value, lease).await
    }
    async fn delete_fenced(&self, key: &str, lease: &Lease) -> CoreResult<()> {
        self.0.delete_fenced(key, lease).await
    }
}

#[async_trait]
impl Locker for SharedStore {
    async fn try_acquire(&self, name: &str, ttl: std::time::Duration) -> CoreResult<Option<Lease>> {
        self.0.try_acquire(name, ttl).await
    }
    async fn refresh(&self, lease: &Lease, ttl: std::time::Duration) -> CoreResult<Lease> {
        self.0.refresh(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> CoreResult<()> {
        self.0.release(lease).await
    }
    async fn clean_expired_locks(&self) -> CoreResult<usize> {
        self.0.clean_expired_locks().await
    }
}

/// The encrypted view of a storage opened from an `encrypted+` URL.
#[cfg(feature = "encrypted")]
pub type EncryptedStore = cert_encrypted::Encrypted<SharedStore>;
