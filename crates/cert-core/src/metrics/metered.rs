//! [`Metered`]: any storage, timed and counted operation by operation.

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrics::{counter, histogram};

use super::names;
use crate::compose::Layer;
use crate::error::{Error, Result};
use crate::lock::{Lease, Locker};
use crate::storage::{KeyInfo, Storage};

/// A [`Storage`] and [`Locker`] that records, for every operation of `S`, its duration
/// ([`STORAGE_DURATION`](names::STORAGE_DURATION)) and its failures
/// ([`STORAGE_ERRORS`](names::STORAGE_ERRORS), by [`Error::kind`]; a missing key is an
/// answer, not a failure), labelled with the backend's name and the operation
/// (`store`, `load`, `delete`, `exists`, `list`, `stat`, `store_fenced`, `delete_fenced`,
/// `try_acquire`, `refresh`, `release`, `clean_expired_locks`). A fenced write refused
/// for a lost lease also counts in
/// [`LOCK_FENCED_REFUSED`](names::LOCK_FENCED_REFUSED).
///
/// Every method forwards to `S`, the overridable ones included, so the backend's atomic
/// fenced writes and lock cleaning are kept. Wrap the outermost storage the engine uses
/// (around `Encrypted<S>`, say) to time what the engine waits for.
///
/// ```
/// use std::sync::Arc;
/// use cert_core::metrics::Metered;
/// use cert_core::{MemoryStorage, Storage, Store};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cert_core::Result<()> {
/// let store: Arc<dyn Store> = Arc::new(Metered::new(MemoryStorage::new(), "memory"));
/// store.store("a", b"1").await?;
/// assert_eq!(store.load("a").await?, b"1");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    backend: &'static str,
}

impl<S> Metered<S> {
    /// Wraps `inner`, labelling its numbers `backend="<backend>"` (`redis`, `postgres`,
    /// `s3`, ...).
    pub fn new(inner: S, backend: &'static str) -> Self {
        Metered { inner, backend }
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The backend label.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Records one finished operation.
    fn record<T>(&self, operation: &'static str, took: Duration, result: &Result<T>) {
        histogram!(names::STORAGE_DURATION, "backend" => self.backend, "operation" => operation)
            .record(took.as_secs_f64());
        let Err(err) = result else { return };
        if err.is_not_found() {
            return;
        }
        counter!(
            names::STORAGE_ERRORS,
            "backend" => self.backend,
            "operation" => operation,
            "kind" => err.kind()
        )
        .increment(1);
        if matches!(err, Error::LockLost { .. })
            && matches!(operation, "store_fenced" | "delete_fenced")
        {
            counter!(names::LOCK_FENCED_REFUSED, "backend" => self.backend).increment(1);
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Metered<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metered")
            .field("backend", &self.backend)
            .field("inner", &self.inner)
            .finish()
    }
}

/// Times `$call` and records it as `$operation`.
macro_rules! timed {
    ($self:ident, $operation:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.record($operation, started.elapsed(), &result);
        result
    }};
}

#[async_trait]
impl<S: Storage> Storage for Metered<S> {
    async fn store(&self, key: &str, value: &[u8]) -> Result<()> {
        timed!(self, "store", self.inner.store(key, value))
    }

    async fn load(&self, key: &str) -> Result<Vec<u8>> {
        timed!(self, "load", self.inner.load(key))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        timed!(self, "delete", self.inner.delete(key))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        timed!(self, "exists", self.inner.exists(key))
    }

    async fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        timed!(self, "list", self.inner.list(prefix, recursive))
    }

    async fn stat(&self, key: &str) -> Result<KeyInfo> {
        timed!(self, "stat", self.inner.stat(key))
    }

    async fn store_fenced(&self, key: &str, value: &[u8], lease: &Lease) -> Result<()> {
        timed!(
            self,
            "store_fenced",
            self.inner.store_fenced(key, value, lease)
        )
    }

    async fn delete_fenced(&self, key: &str, lease: &Lease) -> Result<()> {
        timed!(self, "delete_fenced", self.inner.delete_fenced(key, lease))
    }
}

#[async_trait]
impl<S: Locker> Locker for Metered<S> {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        timed!(self, "try_acquire", self.inner.try_acquire(name, ttl))
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        timed!(self, "refresh", self.inner.refresh(lease, ttl))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        timed!(self, "release", self.inner.release(lease))
    }

    async fn clean_expired_locks(&self) -> Result<usize> {
        timed!(
            self,
            "clean_expired_locks",
            self.inner.clean_expired_locks()
        )
    }

    fn lock_admin(&self) -> Option<&dyn crate::LockAdmin> {
        self.inner.lock_admin()
    }
}

/// [`Metered`] as a [`Layer`]: `MeteredLayer::new("redis").layer(storage)`.
#[derive(Debug, Clone, Copy)]
pub struct MeteredLayer {
    backend: &'static str,
}

impl MeteredLayer {
    /// A layer labelling its storages `backend="<backend>"`.
    pub fn new(backend: &'static str) -> Self {
        MeteredLayer { backend }
    }
}

impl<S> Layer<S> for MeteredLayer {
    type Wrapped = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered::new(inner, self.backend)
    }
}
