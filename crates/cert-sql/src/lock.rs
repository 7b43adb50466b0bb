//! [`Locker`] and [`LockAdmin`] for [`SqlStorage`]: leases as rows of the lock table,
//! judged by the database's clock.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use cert_core::{Error, Lease, LockAdmin, LockInfo, LockToken, Locker, Result, validate_key};

use crate::SqlStorage;

/// The longest lease accepted; longer times to live are shortened to it.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A time to live in whole microseconds, rounded up so the database's expiry is never
/// earlier than the caller's local deadline.
fn ttl_micros(ttl: Duration) -> i64 {
    let ttl = ttl.min(MAX_TTL);
    let micros = ttl.as_micros() + u128::from(!ttl.subsec_nanos().is_multiple_of(1000));
    i64::try_from(micros).unwrap_or(i64::MAX)
}

/// The error for a lease whose row no longer holds its token.
pub(crate) fn lock_lost(name: &str) -> Error {
    Error::LockLost {
        name: name.to_owned(),
    }
}

#[async_trait]
impl Locker for SqlStorage {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        validate_key(name)?;
        let token = LockToken::generate();
        let micros = ttl_micros(ttl);
        let started = Instant::now();
        let taken = self
            .timed(async { on_backend!(self, b => b.acquire(name, token.as_str(), micros).await) })
            .await?;
        Ok(taken.then(|| Lease::new(name, token, ttl, started)))
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let name = lease.name();
        validate_key(name)?;
        let micros = ttl_micros(ttl);
        let started = Instant::now();
        let token = lease.token().as_str();
        let kept = self
            .timed(async { on_backend!(self, b => b.refresh(name, token, micros).await) })
            .await?;
        if kept {
            Ok(lease.renewed(ttl, started))
        } else {
            Err(lock_lost(name))
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let name = lease.name();
        validate_key(name)?;
        let token = lease.token().as_str();
        let released = self
            .timed(async { on_backend!(self, b => b.release(name, token).await) })
            .await?;
        if released {
            Ok(())
        } else {
            Err(lock_lost(name))
        }
    }

    async fn clean_expired_locks(&self) -> Result<usize> {
        self.timed(async { on_backend!(self, b => b.clean_locks().await) })
            .await
    }

    fn lock_admin(&self) -> Option<&dyn cert_core::LockAdmin> {
        Some(self)
    }
}

/// Locks listed from the lock table with the time left by the database's clock;
/// forced release deletes the row whoever holds it.
#[async_trait]
impl LockAdmin for SqlStorage {
    async fn list_locks(&self) -> Result<Vec<LockInfo>> {
        let rows = self
            .timed(async { on_backend!(self, b => b.list_locks().await) })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, token, micros_left)| {
                LockInfo::new(name, token)
                    .with_expires_in(Duration::from_micros(micros_left.max(0).unsigned_abs()))
            })
            .collect())
    }

    async fn force_release(&self, name: &str) -> Result<bool> {
        validate_key(name)?;
        self.timed(async { on_backend!(self, b => b.force_release(name).await) })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_microseconds() {
        assert_eq!(ttl_micros(Duration::from_nanos(1001)), 2);
        assert_eq!(ttl_micros(Duration::from_millis(200)), 200_000);
        assert!(ttl_micros(Duration::MAX) > 0);
    }
}
