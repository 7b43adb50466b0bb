//! [`Lease`] and [`LockToken`]: one holding of a lock, the token that proves it, and the
//! local deadline and fence margin writes made under it are checked against.

use std::fmt;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A random token identifying one lease.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LockToken(String);

impl LockToken {
    /// A fresh token: 128 random bits from the operating system, as 32 hex digits.
    ///
    /// Falls back to a time-and-counter based value only if the OS random source fails,
    /// which keeps tokens unique within a process.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mixed = nanos ^ (u128::from(count) << 64) ^ u128::from(std::process::id());
            bytes = mixed.to_le_bytes();
        }
        LockToken(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A token read back from a backend.
    pub fn from_string(token: impl Into<String>) -> Self {
        LockToken(token.into())
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockToken({})", self.0)
    }
}

impl fmt::Display for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One holding of a lock: its name, token and how long it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    name: String,
    token: LockToken,
    ttl: Duration,
    deadline: Instant,
}

impl Lease {
    /// A lease on `name` with `token` for `ttl`, counted from `started`, the instant
    /// just *before* the request that took or refreshed it was sent, so the local deadline
    /// never outlives the one the backend enforces.
    pub fn new(name: impl Into<String>, token: LockToken, ttl: Duration, started: Instant) -> Self {
        Lease {
            name: name.into(),
            token,
            ttl,
            deadline: started + ttl,
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lease's token.
    pub fn token(&self) -> &LockToken {
        &self.token
    }

    /// The time to live this lease was taken or last refreshed with.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The local instant after which the lease can no longer be relied on.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the local deadline has passed.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The time left before the local deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The part of the lease a fenced write keeps in reserve: a fifth of the time to live,
    /// between 50 ms and 10 s. A write is only started while more than this is left, so the
    /// write itself (a network round trip, an fsync) completes before the deadline.
    pub fn fence_margin(&self) -> Duration {
        (self.ttl / 5).clamp(Duration::from_millis(50), Duration::from_secs(10))
    }

    /// `Ok` while the lease has more than its [`fence_margin`](Lease::fence_margin) left;
    /// [`Error::LockLost`] otherwise. Every write made under a lease checks this first.
    pub fn check_fence(&self) -> Result<()> {
        if self.remaining() > self.fence_margin() {
            Ok(())
        } else {
            Err(Error::LockLost {
                name: self.name.clone(),
            })
        }
    }

    /// The same lease with the deadline moved to `ttl` after `started` (for backends'
    /// `refresh`).
    pub fn renewed(&self, ttl: Duration, started: Instant) -> Lease {
        Lease::new(self.name.clone(), self.token.clone(), ttl, started)
    }
}
