//! [`Storage`] for [`FileStorage`]: keys and values are checked on the calling task, the
//! file system work runs on the blocking pool, or inline for small reads.

use std::sync::Arc;

use async_trait::async_trait;
use cert_core::{KeyInfo, Lease, Result, Storage, validate_key, validate_prefix, validate_value};

use crate::{FileStorage, blocking};

#[async_trait]
impl Storage for FileStorage {
    async fn store(&self, key: &str, value: &[u8]) -> Result<()> {
        validate_key(key)?;
        validate_value(key, value.len())?;
        let config = Arc::clone(&self.config);
        let key = key.to_owned();
        let value = value.to_vec();
        blocking(move || config.store(&key, &value)).await
    }

    async fn load(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        let config = Arc::clone(&self.config);
        let key = key.to_owned();
        if !self.inline_reads() {
            return blocking(move || {
                let (file, size) = config.open_value(&key)?;
                config.read_value(&key, file, size)
            })
            .await;
        }
        let (file, size) = config.open_value(&key)?;
        if size <= config.inline_read_limit {
            return config.read_value(&key, file, size);
        }
        blocking(move || config.read_value(&key, file, size)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let config = Arc::clone(&self.config);
        let key = key.to_owned();
        blocking(move || config.delete(&key)).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        if self.inline_reads() {
            return self.config.exists(key);
        }
        let config = Arc::clone(&self.config);
        let key = key.to_owned();
        blocking(move || config.exists(&key)).await
    }

    async fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let config = Arc::clone(&self.config);
        let prefix = prefix.to_owned();
        blocking(move || config.list(&prefix, recursive)).await
    }

    async fn stat(&self, key: &str) -> Result<KeyInfo> {
        validate_key(key)?;
        if self.inline_reads() {
            return self.config.stat(key);
        }
        let config = Arc::clone(&self.config);
        let key = key.to_owned();
        blocking(move || config.stat(&key)).await
    }
    /// The local deadline check first, then, under the lock file's guard, a check that
    /// the lock file holds the lease's token and an unexpired lease, and the usual atomic
    /// write (see the crate docs, "Fenced writes").
    async fn store_fenced(&self, key: &str, value: &[u8], lease: &Lease) -> Result<()> {
        lease.check_fence()?;
        validate_key(key)?;
        validate_key(lease.name())?;
        validate_value(key, value.len())?;
        let config = Arc::clone(&self.config);
        let key = key.to_owned();
        let value = value.to_vec();
        let lease = lease.clone();
        blocking(move || {
            config.fenced(&lease, |guarded| {
                config.store_checked(&key, &value, guarded)
            })
        })
        .await
    }

    /// Like [`store_fenced`](Self::store_fenced), deleting under the guard.
    async fn delete_fenced(&self, key: &str, lease: &Lease) -> Result<()> {
        lease.check_fence()?;
        validate_key(key)?;
        validate_key(lease.name())?;
        let config = Arc::clone(&self.config);
        let key = key.to_owned();
        let lease = lease.clone();
        blocking(move || config.fenced(&lease, |guarded| config.delete_checked(&key, guarded)))
            .await
    }
}
