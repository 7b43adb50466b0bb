//! [`LockAdmin`] for [`AzureStorage`]: lock blobs listed with their lease state, and
//! leases broken at once.

use std::time::Duration;

use async_trait::async_trait;
use azure_storage_blob::models::{BlobClientBreakLeaseOptions, LeaseState};
use cert_core::{LockAdmin, LockInfo, Result, validate_key};

use crate::lock::LOCKS;
use crate::storage::AzureStorage;

/// Operator access to the lock blobs. The service never reveals a lease's ID, so a listed
/// lock shows no holder token and no time left, only whether it is leased; a forced
/// release breaks the lease at once.
#[async_trait]
impl LockAdmin for AzureStorage {
    async fn list_locks(&self) -> Result<Vec<LockInfo>> {
        let dir = format!("{}{LOCKS}/", self.prefix);
        let mut locks: Vec<LockInfo> = self
            .list_items(&dir, None)
            .await?
            .into_iter()
            .filter_map(|item| {
                let name = item.name.strip_prefix(&dir)?.to_owned();
                match item.lease? {
                    LeaseState::Leased | LeaseState::Breaking => {
                        Some(LockInfo::new(name, "(lease ID not readable)"))
                    }
                    LeaseState::Expired | LeaseState::Broken => {
                        Some(LockInfo::new(name, "(lease ended)").with_expires_in(Duration::ZERO))
                    }
                    _ => None, // never leased, or released
                }
            })
            .collect();
        locks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(locks)
    }

    async fn force_release(&self, name: &str) -> Result<bool> {
        validate_key(name)?;
        let blob = self.blob(&self.lock_name(name));
        match self
            .retry
            .run("break lease", || {
                let options = BlobClientBreakLeaseOptions {
                    break_period: Some(0),
                    ..Default::default()
                };
                blob.break_lease(Some(options))
            })
            .await
        {
            Ok(_) => Ok(true),
            // No lock blob, or no lease on it.
            Err(failure) if matches!(failure.status(), Some(404 | 409)) => Ok(false),
            Err(failure) => Err(self.fail(name, failure)),
        }
    }
}
