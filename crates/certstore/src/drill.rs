//! Crash drills: `CERTSTORE_DRILL_WRITE_DELAY_MS=N` slows every write of the opened
//! storage by `N` milliseconds, as a slow disk or a distant server would, so that a
//! `kill -9` aimed at a running command lands inside its writes. It changes nothing else;
//! without the variable nothing is wrapped.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cert_core::{KeyInfo, Lease, Locker, Result, Storage, Store};

/// The variable naming the delay, in milliseconds.
pub const WRITE_DELAY_VAR: &str = "CERTSTORE_DRILL_WRITE_DELAY_MS";

/// The delay asked for by [`WRITE_DELAY_VAR`], if any (at most 10 s).
pub(crate) fn write_delay() -> Option<Duration> {
    let millis: u64 = std::env::var(WRITE_DELAY_VAR).ok()?.trim().parse().ok()?;
    (millis > 0).then(|| Duration::from_millis(millis.min(10_000)))
}

/// A storage whose writes each wait `delay` first.
#[derive(Debug)]
pub(crate) struct SlowWrites {
    inner: Arc<dyn Store>,
    delay: Duration,
}

impl SlowWrites {
    pub(crate) fn new(inner: Arc<dyn Store>, delay: Duration) -> Self {
        SlowWrites { inner, delay }
    }
}

#[async_trait]
impl Storage for SlowWrites {
    async fn store(&self, key: &str, value: &[u8]) -> Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.store(key, value).await
    }
    async fn load(&self, key: &str) -> Result<Vec<u8>> {
        self.inner.load(key).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.delete(key).await
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key).await
    }
    async fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        self.inner.list(prefix, recursive).await
    }
    async fn stat(&self, key: &str) -> Result<KeyInfo> {
        self.inner.stat(key).await
    }
    async fn store_fenced(&self, key: &str, value: &[u8], lease: &Lease) -> Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.store_fenced(key, value, lease).await
    }
    async fn delete_fenced(&self, key: &str, lease: &Lease) -> Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.delete_fenced(key, lease).await
    }
}

#[async_trait]
impl Locker for SlowWrites {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        self.inner.try_acquire(name, ttl).await
    }
    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        self.inner.refresh(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.inner.release(lease).await
    }
    async fn clean_expired_locks(&self) -> Result<usize> {
        self.inner.clean_expired_locks().await
    }

    fn lock_admin(&self) -> Option<&dyn cert_core::LockAdmin> {
        self.inner.lock_admin()
    }
}
