//! [`Locker`] for [`RedisStorage`]: `SET NX PX` to take, compare-and-act scripts to
//! refresh and release, expiry judged by the Redis server's clock.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use cert_core::{Error, Lease, LockToken, Locker, Result, validate_key};

use crate::error::bounded;
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
        Ok(reply.map(|_| Lease::new(name, token, ttl, started)))
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
        if extended == 1 {
            Ok(lease.renewed(ttl, started))
        } else {
            Err(lost(lease))
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        validate_key(lease.name())?;
        let mut conn = self.conn.clone();
        let mut call = scripts::RELEASE.prepare_invoke();
        call.key(self.names.lock(lease.name()))
            .arg(lease.token().as_str());
        let released: i64 = bounded(self.timeout, call.invoke_async(&mut conn)).await?;
        if released == 1 {
            Ok(())
        } else {
            Err(lost(lease))
        }
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
