//! How storages combine: [`Store`] (a storage that also provides locks), [`Layer`] (one
//! storage wrapped in another), and [`Storage`] and [`Locker`] through `Arc<T>` and
//! `Box<T>`. Every method of the pointer impls forwards to the pointee, including the
//! provided ones a backend may override (fenced writes, cleaning of expired locks), so a
//! shared or boxed backend keeps its atomic versions, and `Arc<dyn Store>` is a storage
//! that wrappers such as `Encrypted<S>` take as it is.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::lock::{Lease, Locker};
use crate::storage::{KeyInfo, Storage};

/// A storage that also provides locks: what the certificate engine and the shared test
/// suite need. Every type implementing both traits is one.
pub trait Store: Storage + Locker {}

impl<T: Storage + Locker> Store for T {}

/// Wraps a value in another, tower style: a tiny trait with no bound on what it wraps, so
/// storage wrappers compose (`layer_a.layer(layer_b.layer(storage))`).
pub trait Layer<S> {
    /// What wrapping `S` gives.
    type Wrapped;

    /// Wraps `inner`.
    fn layer(&self, inner: S) -> Self::Wrapped;
}

/// Implements both traits for a pointer type by forwarding every method, one body for
/// all pointers so they cannot drift apart.
macro_rules! forward {
    ($($pointer:ident),+) => {$(
        #[async_trait]
        impl<T: Storage + ?Sized> Storage for $pointer<T> {
            async fn store(&self, key: &str, value: &[u8]) -> Result<()> {
                (**self).store(key, value).await
            }

            async fn load(&self, key: &str) -> Result<Vec<u8>> {
                (**self).load(key).await
            }

            async fn delete(&self, key: &str) -> Result<()> {
                (**self).delete(key).await
            }

            async fn exists(&self, key: &str) -> Result<bool> {
                (**self).exists(key).await
            }

            async fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
                (**self).list(prefix, recursive).await
            }

            async fn stat(&self, key: &str) -> Result<KeyInfo> {
                (**self).stat(key).await
            }

            async fn store_fenced(&self, key: &str, value: &[u8], lease: &Lease) -> Result<()> {
                (**self).store_fenced(key, value, lease).await
            }

            async fn delete_fenced(&self, key: &str, lease: &Lease) -> Result<()> {
                (**self).delete_fenced(key, lease).await
            }
        }

        #[async_trait]
        impl<T: Locker + ?Sized> Locker for $pointer<T> {
            async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
                (**self).try_acquire(name, ttl).await
            }

            async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
                (**self).refresh(lease, ttl).await
            }

            async fn release(&self, lease: &Lease) -> Result<()> {
                (**self).release(lease).await
            }

            async fn clean_expired_locks(&self) -> Result<usize> {
                (**self).clean_expired_locks().await
            }

            fn lock_admin(&self) -> Option<&dyn crate::LockAdmin> {
                (**self).lock_admin()
            }
        }
    )+};
}

forward!(Arc, Box);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Store;
    use crate::error::Error;
    use crate::memory::MemoryStorage;
    use crate::storage::StorageExt;

    /// A lease on `name` that `backend` no longer honours although its local deadline is
    /// far away: the provided `store_fenced`/`delete_fenced`, which only check that
    /// deadline, would write with it; the memory backend's overrides refuse it.
    async fn released_lease(backend: &MemoryStorage, name: &str) -> Lease {
        let lease = backend
            .try_acquire(name, Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        backend.release(&lease).await.unwrap();
        lease
    }

    /// Checks, through `wrapped`, that every override of `backend` is reached.
    async fn overrides_are_reached<W: Store + ?Sized>(wrapped: &W, backend: &MemoryStorage) {
        let lease = released_lease(backend, "fenced").await;
        assert!(
            lease.check_fence().is_ok(),
            "the local deadline still allows writes"
        );

        let refused = wrapped.store_fenced("k", b"late", &lease).await;
        assert!(
            matches!(refused, Err(Error::LockLost { .. })),
            "{refused:?}"
        );
        assert_eq!(backend.load_opt("k").await.unwrap(), None);

        backend.store("k", b"kept").await.unwrap();
        let refused = wrapped.delete_fenced("k", &lease).await;
        assert!(
            matches!(refused, Err(Error::LockLost { .. })),
            "{refused:?}"
        );
        assert_eq!(backend.load("k").await.unwrap(), b"kept");
        backend.delete("k").await.unwrap();

        // The provided `clean_expired_locks` removes nothing; the override removes the
        // expired lock.
        backend
            .try_acquire("expired", Duration::from_millis(1))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(wrapped.clean_expired_locks().await.unwrap(), 1);

        // The required methods reach the same backend.
        let held = wrapped
            .try_acquire("held", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        wrapped.store_fenced("k", b"v", &held).await.unwrap();
        assert_eq!(wrapped.load("k").await.unwrap(), b"v");
        assert!(wrapped.exists("k").await.unwrap());
        assert_eq!(wrapped.stat("k").await.unwrap().size, 1);
        assert_eq!(wrapped.list("", true).await.unwrap(), vec!["k"]);
        let held = wrapped
            .refresh(&held, Duration::from_secs(60))
            .await
            .unwrap();
        wrapped.delete_fenced("k", &held).await.unwrap();
        wrapped.store("k", b"w").await.unwrap();
        wrapped.delete("k").await.unwrap();
        wrapped.release(&held).await.unwrap();
        assert!(backend.is_empty());
    }

    #[tokio::test]
    async fn arc_and_box_reach_the_backend_overrides() {
        let backend = MemoryStorage::new();
        overrides_are_reached(&Arc::new(backend.clone()), &backend).await;
        overrides_are_reached(&Box::new(backend.clone()), &backend).await;
        let shared: Arc<dyn Store> = Arc::new(backend.clone());
        overrides_are_reached(&shared, &backend).await;
        let boxed: Box<dyn Store> = Box::new(backend.clone());
        overrides_are_reached(&boxed, &backend).await;
        overrides_are_reached(&Arc::new(shared), &backend).await;
    }
}
