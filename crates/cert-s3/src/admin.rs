//! [`LockAdmin`] for [`S3Storage`]: lock objects listed with holder and time left (by
//! the server's clock), and removed on condition that they did not change meanwhile.

use async_trait::async_trait;
use cert_core::{LockAdmin, LockInfo, Result, validate_key};

use crate::error::Kind;
use crate::{LOCK_DIR, S3Storage, message};

/// Operator access: the lock objects listed with holder and time left, and removed
/// whatever their holder (conditioned on the object read, so a lock taken over meanwhile
/// is not removed by mistake).
#[async_trait]
impl LockAdmin for S3Storage {
    async fn list_locks(&self) -> Result<Vec<LockInfo>> {
        let dir = format!("{}{LOCK_DIR}/", self.inner.root);
        let listing = self
            .list_objects(&dir, false, None)
            .await
            .map_err(|failure| self.error(failure, LOCK_DIR))?;
        let mut locks = Vec::with_capacity(listing.objects.len());
        for (object, _) in listing.objects {
            let Some(current) = self
                .read_lock(&object)
                .await
                .map_err(|failure| self.error(failure, &object))?
            else {
                continue; // released meanwhile
            };
            let name = object[dir.len()..].to_owned();
            let token = current
                .body
                .map_or_else(|| "(unreadable lock object)".to_owned(), |b| b.token);
            locks.push(
                LockInfo::new(name, token)
                    .with_since(current.written)
                    .with_expires_in(current.left),
            );
        }
        locks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(locks)
    }

    async fn force_release(&self, name: &str) -> Result<bool> {
        validate_key(name)?;
        let object = self.lock_key(name);
        let Some(current) = self
            .read_lock(&object)
            .await
            .map_err(|failure| self.error(failure, name))?
        else {
            return Ok(false);
        };
        match self.delete_lock(&object, &current.etag).await {
            Ok(()) => Ok(true),
            Err(failure) if failure.kind == Kind::NotFound => Ok(false),
            Err(failure) if failure.kind == Kind::Precondition => Err(message(format!(
                "lock {name} changed while it was being removed (refreshed or taken over); \
                 list the locks again"
            ))),
            Err(failure) => Err(self.error(failure, name)),
        }
    }
}
