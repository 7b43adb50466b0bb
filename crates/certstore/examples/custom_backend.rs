//! A custom backend, checked by the shared conformance suite.
//!
//! `Prefixed<S>` keeps every key and lock of a storage below a fixed prefix of another
//! storage (a way to give several tenants one bucket or table). Any storage written
//! outside this workspace follows the same pattern: implement [`Storage`] and
//! [`Locker`], then expand `cert_conformance::conformance_tests!` with a constructor that
//! opens a fresh, isolated instance per case.
//!
//! Run the suite with `cargo test -p certstore --example custom_backend`.
#![allow(missing_docs)]

use std::time::Duration;

use cert_core::{
    Error, KeyInfo, Lease, Locker, Result, Storage, async_trait, validate_key, validate_prefix,
};

/// Every key of `inner`, below `prefix/`.
#[derive(Debug, Clone)]
pub struct Prefixed<S> {
    inner: S,
    prefix: String,
}

impl<S> Prefixed<S> {
    pub fn new(inner: S, prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        validate_key(&prefix)?;
        Ok(Prefixed { inner, prefix })
    }

    fn full(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }

    /// A key of `inner` back in this storage's terms.
    fn strip(&self, key: String) -> String {
        key.strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .map_or(key.clone(), str::to_owned)
    }

    /// Errors name this storage's keys, not the inner ones.
    fn rename(&self, err: Error) -> Error {
        match err {
            Error::NotFound { key } => Error::NotFound {
                key: self.strip(key),
            },
            Error::TooLarge { key, size, limit } => Error::TooLarge {
                key: self.strip(key),
                size,
                limit,
            },
            Error::LockLost { name } => Error::LockLost {
                name: self.strip(name),
            },
            other => other,
        }
    }
}

#[async_trait]
impl<S: Storage> Storage for Prefixed<S> {
    async fn store(&self, key: &str, value: &[u8]) -> Result<()> {
        validate_key(key)?;
        let full = self.full(key);
        self.inner
            .store(&full, value)
            .await
            .map_err(|e| self.rename(e))
    }

    async fn load(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        self.inner
            .load(&self.full(key))
            .await
            .map_err(|e| self.rename(e))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.inner
            .delete(&self.full(key))
            .await
            .map_err(|e| self.rename(e))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        self.inner.exists(&self.full(key)).await
    }

    async fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let inner_prefix = if prefix.is_empty() {
            self.prefix.clone()
        } else {
            self.full(prefix)
        };
        let keys = self.inner.list(&inner_prefix, recursive).await?;
        Ok(keys.into_iter().map(|k| self.strip(k)).collect())
    }

    async fn stat(&self, key: &str) -> Result<KeyInfo> {
        validate_key(key)?;
        let mut info = self
            .inner
            .stat(&self.full(key))
            .await
            .map_err(|e| self.rename(e))?;
        info.key = key.to_owned();
        Ok(info)
    }

    // Forward fenced writes, with the lease in the inner storage's terms, so the inner
    // backend's fence applies; the trait's default would only check the local deadline.
    async fn store_fenced(&self, key: &str, value: &[u8], lease: &Lease) -> Result<()> {
        validate_key(key)?;
        let inner = self.inner_lease(lease)?;
        self.inner
            .store_fenced(&self.full(key), value, &inner)
            .await
            .map_err(|e| self.rename(e))
    }

    async fn delete_fenced(&self, key: &str, lease: &Lease) -> Result<()> {
        validate_key(key)?;
        let inner = self.inner_lease(lease)?;
        self.inner
            .delete_fenced(&self.full(key), &inner)
            .await
            .map_err(|e| self.rename(e))
    }
}

#[async_trait]
impl<S: Locker> Locker for Prefixed<S> {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        validate_key(name)?;
        let lease = self.inner.try_acquire(&self.full(name), ttl).await?;
        Ok(lease.map(|l| Lease::new(name, l.token().clone(), ttl, l.deadline() - ttl)))
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let inner = self.inner_lease(lease)?;
        let renewed = self
            .inner
            .refresh(&inner, ttl)
            .await
            .map_err(|e| self.rename(e))?;
        Ok(Lease::new(
            lease.name(),
            renewed.token().clone(),
            ttl,
            renewed.deadline() - ttl,
        ))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let inner = self.inner_lease(lease)?;
        self.inner.release(&inner).await.map_err(|e| self.rename(e))
    }

    async fn clean_expired_locks(&self) -> Result<usize> {
        self.inner.clean_expired_locks().await
    }
}

impl<S> Prefixed<S> {
    fn inner_lease(&self, lease: &Lease) -> Result<Lease> {
        validate_key(lease.name())?;
        Ok(Lease::new(
            self.full(lease.name()),
            lease.token().clone(),
            lease.ttl(),
            lease.deadline() - lease.ttl(),
        ))
    }
}

fn main() {
    println!("run the conformance suite with: cargo test -p certstore --example custom_backend");
}

#[cfg(test)]
mod conformance {
    use std::sync::LazyLock;

    use cert_conformance::{Capabilities, conformance_tests};
    use cert_core::MemoryStorage;

    use super::*;

    /// One shared inner storage, as a real deployment would have; each case gets its own
    /// prefix, and opening a namespace again reaches the same data.
    static SHARED: LazyLock<MemoryStorage> = LazyLock::new(MemoryStorage::new);

    fn open(ns: &str) -> Prefixed<MemoryStorage> {
        Prefixed::new(SHARED.clone(), format!("tenants/{ns}")).unwrap()
    }

    conformance_tests! {
        open: |ns: String| async move { open(&ns) },
        capabilities: Capabilities::default().without_cross_process(),
    }
}
