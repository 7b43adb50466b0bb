//! [`Locker`] for [`AzureStorage`]: a lock is a blob lease on an empty lock blob, its lease
//! ID the lock token (see the crate docs for durations and expiry).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_storage_blob::models::{BlobClientAcquireLeaseOptions, BlobClientUploadOptions};
use cert_core::{Error, Lease, LockToken, Locker, Result, validate_key};

use crate::config::config_error;
use crate::storage::AzureStorage;

/// The shortest lease the blob service grants.
pub const MIN_LEASE: Duration = Duration::from_secs(15);

/// The longest finite lease the blob service grants.
pub const MAX_LEASE: Duration = Duration::from_secs(60);

/// Where lock blobs live, below the prefix.
pub(crate) const LOCKS: &str = ".certstore-locks";

impl AzureStorage {
    pub(crate) fn lock_name(&self, name: &str) -> String {
        format!("{}{LOCKS}/{name}", self.prefix)
    }
}

/// The lease duration granted for a requested time to live: 15 to 60 whole seconds.
pub fn lease_duration(ttl: Duration) -> Duration {
    Duration::from_secs(ttl.as_secs()).clamp(MIN_LEASE, MAX_LEASE)
}

/// A lock token as a lease ID: tokens are 32 hex digits, lease IDs GUIDs. `None` for a
/// token that cannot be a lease ID of ours.
fn lease_id(token: &LockToken) -> Option<String> {
    let t = token.as_str();
    let hex: String = t.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

fn lock_lost(name: &str) -> Error {
    Error::LockLost {
        name: name.to_owned(),
    }
}

#[async_trait]
impl Locker for AzureStorage {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        validate_key(name)?;
        let duration = lease_duration(ttl);
        let token = LockToken::generate();
        let Some(id) = lease_id(&token) else {
            return Err(config_error("generated lock token is not a lease ID"));
        };
        let blob = self.blob(&self.lock_name(name));
        // The lock blob may not exist yet: create it and try again.
        for _ in 0..3 {
            let started = Instant::now();
            let acquired = self
                .retry
                .run("acquire lease", || {
                    let options = BlobClientAcquireLeaseOptions {
                        proposed_lease_id: Some(id.clone()),
                        ..Default::default()
                    };
                    blob.acquire_lease(duration.as_secs() as i32, Some(options))
                })
                .await;
            match acquired {
                Ok(_) => {
                    return Ok(Some(Lease::new(
                        name,
                        LockToken::from_string(id),
                        duration,
                        started,
                    )));
                }
                Err(failure) if failure.status() == Some(409) => return Ok(None),
                Err(failure) if failure.status() == Some(404) => {
                    if failure.code() == Some("ContainerNotFound") {
                        return Err(self.fail(name, failure));
                    }
                    let created = self
                        .retry
                        .run("create lock blob", || {
                            let options = BlobClientUploadOptions::default().if_not_exists();
                            blob.upload(azure_core::Bytes::new().into(), Some(options))
                        })
                        .await;
                    match created {
                        Ok(_) => {}
                        // Someone else created it (409), or it is leased right now (412).
                        Err(f) if matches!(f.status(), Some(409 | 412)) => {}
                        Err(f) => return Err(self.fail(name, f)),
                    }
                }
                Err(failure) => return Err(self.fail(name, failure)),
            }
        }
        Ok(None)
    }

    async fn refresh(&self, lease: &Lease, _ttl: Duration) -> Result<Lease> {
        validate_key(lease.name())?;
        let Some(id) = lease_id(lease.token()) else {
            return Err(lock_lost(lease.name()));
        };
        if lease.is_expired() {
            return Err(lock_lost(lease.name()));
        }
        let blob = self.blob(&self.lock_name(lease.name()));
        let started = Instant::now();
        match self
            .retry
            .run("renew lease", || blob.renew_lease(id.clone(), None))
            .await
        {
            Ok(_) => Ok(lease.renewed(lease.ttl(), started)),
            Err(failure) if matches!(failure.status(), Some(400 | 404 | 409 | 412)) => {
                Err(lock_lost(lease.name()))
            }
            Err(failure) => Err(self.fail(lease.name(), failure)),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        validate_key(lease.name())?;
        let Some(id) = lease_id(lease.token()) else {
            return Err(lock_lost(lease.name()));
        };
        if lease.is_expired() {
            return Err(lock_lost(lease.name()));
        }
        let blob = self.blob(&self.lock_name(lease.name()));
        let tries = std::sync::atomic::AtomicU32::new(0);
        match self
            .retry
            .run("release lease", || {
                tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                blob.release_lease(id.clone(), None)
            })
            .await
        {
            Ok(_) => Ok(()),
            // A retry found no lease at all: an earlier try released it and its answer was
            // lost (the lease was live when the release was sent, so nobody else held it).
            // Releasing is not idempotent, so without this a slow answer under load would
            // turn a clean release into LockLost.
            Err(failure)
                if tries.load(std::sync::atomic::Ordering::Relaxed) > 1
                    && failure.status() == Some(409)
                    && failure.code() == Some("LeaseNotPresentWithLeaseOperation") =>
            {
                Ok(())
            }
            Err(failure) if matches!(failure.status(), Some(400 | 404 | 409 | 412)) => {
                Err(lock_lost(lease.name()))
            }
            Err(failure) => Err(self.fail(lease.name(), failure)),
        }
    }

    fn lock_admin(&self) -> Option<&dyn cert_core::LockAdmin> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lease_durations_are_clamped() {
        assert_eq!(lease_duration(Duration::from_millis(200)), MIN_LEASE);
        assert_eq!(
            lease_duration(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert_eq!(
            lease_duration(Duration::from_millis(20_900)),
            Duration::from_secs(20)
        );
        assert_eq!(lease_duration(Duration::from_secs(3600)), MAX_LEASE);
    }

    #[test]
    fn tokens_become_lease_ids() {
        let token = LockToken::from_string("0123456789abcdef0123456789ABCDEF");
        let id = lease_id(&token).unwrap();
        assert_eq!(id, "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(lease_id(&LockToken::from_string(id.clone())).unwrap(), id);
        assert!(lease_id(&LockToken::from_string("nope")).is_none());
        assert!(lease_id(&LockToken::generate()).is_some());
    }
}
