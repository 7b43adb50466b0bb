//! [`LockAdmin`]: what an operator needs to see and clear locks, for backends that can
//! list them.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::error::Result;

/// One lock as stored by a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock's name.
    pub name: String,
    /// The holder's token (a random value, not a secret: holding it does not grant the
    /// lock to anyone else).
    pub token: String,
    /// When the lease was taken or last refreshed, where the backend records it.
    pub since: Option<SystemTime>,
    /// How long until the lease runs out (zero once it has expired, for backends that
    /// keep expired locks until cleaned), where the backend knows it.
    pub expires_in: Option<Duration>,
}

impl LockInfo {
    /// A lock `name` held by `token`.
    pub fn new(name: impl Into<String>, token: impl Into<String>) -> Self {
        LockInfo {
            name: name.into(),
            token: token.into(),
            since: None,
            expires_in: None,
        }
    }

    /// The same, taken or last refreshed at `since`.
    pub fn with_since(mut self, since: SystemTime) -> Self {
        self.since = Some(since);
        self
    }

    /// The same, running out in `expires_in`.
    pub fn with_expires_in(mut self, expires_in: Duration) -> Self {
        self.expires_in = Some(expires_in);
        self
    }

    /// Whether the lease has run out.
    pub fn is_expired(&self) -> bool {
        self.expires_in.is_some_and(|left| left.is_zero())
    }
}

/// Operator access to a backend's locks: list them, and remove one whatever its holder.
///
/// Optional: backends that cannot list locks cheaply do not implement it. Forced
/// release breaks mutual exclusion for whoever holds the lock: it is meant for a lock
/// left by a holder known to be gone, before its lease runs out.
#[async_trait]
pub trait LockAdmin: Send + Sync + 'static {
    /// Every lock currently stored, sorted by name (expired ones included where the
    /// backend keeps them until cleaned).
    async fn list_locks(&self) -> Result<Vec<LockInfo>>;

    /// Removes the lock `name` whoever holds it; `false` when there was none.
    async fn force_release(&self, name: &str) -> Result<bool>;
}
