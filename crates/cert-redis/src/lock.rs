//! [`Locker`] for [`RedisStorage`]: `SET NX PX` to take, compare-and-act scripts to
//! refresh and release, expiry judged by the Redis server's clock.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use cert_core::{Error, Lease, LockToken, Locker, Result, validate_key};

use crate::error::{BACKEND, bounded};
use crate::scripts;
use crate::storage::RedisStorage;

/// The longest time to live sent to the server (100 years): longer ones are capped so the
/// server's expiry arithmetic cannot overflow.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// `ttl` in whole milliseconds, rounded up (the server must never expire a lease before
/// the holder's local deadline) and at least 1.
fn ttl_millis(ttl: Duration) -> u64 {
    let millis = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(millis)
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

impl RedisStorage {
    /// When replica acknowledgement is configured: `WAIT`s until enough replicas have
    /// every write this storage's connection made so far (the lock write just done
    /// among them), and fails with [`Error::Unavailable`] when fewer acknowledge in time.
    async fn await_replicas(&self, name: &str) -> Result<()> {
        let (replicas, wait) = self.replica_wait;
        if replicas == 0 {
            return Ok(());
        }
        // `WAIT n 0` would block for ever: a timeout is at least a millisecond.
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        let acknowledged: u64 = bounded(
            self.timeout + wait,
            redis::cmd("WAIT")
                .arg(replicas)
                .arg(wait_ms)
                .query_async(&mut conn),
        )
        .await?;
        if acknowledged >= u64::from(replicas) {
            return Ok(());
        }
        Err(Error::unavailable(
            BACKEND,
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "lock {name}: {acknowledged} of the {replicas} required replicas \
                     acknowledged the lock write within {wait:?}"
                ),
            ),
        ))
    }

    async fn release_token(&self, name: &str, token: &LockToken) -> Result<bool> {
        let mut conn = self.conn.clone();
        let mut call = scripts::RELEASE.prepare_invoke();
        call.key(self.names.lock(name)).arg(token.as_str());
        let released: i64 = bounded(self.timeout, call.invoke_async(&mut conn)).await?;
        Ok(released == 1)
    }
}

fn lost(lease: &Lease) -> Error {
    Error::LockLost {
        name: lease.name().to_owned(),
    }
}

#[async_trait]
impl Locker for RedisStorage {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        validate_key(name)?;
        let token = LockToken::generate();
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let reply: Option<String> = bounded(
            self.timeout,
            redis::cmd("SET")
                .arg(self.names.lock(name))
                .arg(token.as_str())
                .arg("NX")
                .arg("PX")
                .arg(ttl_millis(ttl))
                .query_async(&mut conn),
        )
        .await?;
        if reply.is_none() {
            return Ok(None);
        }
        if let Err(err) = self.await_replicas(name).await {
            // Too few copies to survive a failover: give the lock back rather than hold
            // it on a write that might vanish. Should the release fail too, the lock
            // simply expires with its time to live, so its error adds nothing to `err`.
            let _ = self.release_token(name, &token).await;
            return Err(err);
        }
        Ok(Some(Lease::new(name, token, ttl, started)))
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        validate_key(lease.name())?;
        let mut conn = self.conn.clone();
        let mut call = scripts::REFRESH.prepare_invoke();
        call.key(self.names.lock(lease.name()))
            .arg(lease.token().as_str())
            .arg(ttl_millis(ttl));
        let started = Instant::now();
        let extended: i64 = bounded(self.timeout, call.invoke_async(&mut conn)).await?;
        if extended != 1 {
            return Err(lost(lease));
        }
        // An unacknowledged refresh is reported as a transient failure: the keep-alive
        // tries again, and the lease is lost only if no refresh gets through in time.
        self.await_replicas(lease.name()).await?;
        Ok(lease.renewed(ttl, started))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        validate_key(lease.name())?;
        if self.release_token(lease.name(), lease.token()).await? {
            Ok(())
        } else {
            Err(lost(lease))
        }
    }

    fn lock_admin(&self) -> Option<&dyn cert_core::LockAdmin> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_milliseconds() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1)), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1_001)), 2);
        assert_eq!(ttl_millis(Duration::from_millis(200)), 200);
        assert_eq!(ttl_millis(Duration::MAX), MAX_TTL_MS);
    }
}
