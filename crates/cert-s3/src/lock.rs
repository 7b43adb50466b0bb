//! The [`Locker`] implementation: lock objects taken and kept with conditional writes
//! (see the crate docs for the algorithm), and the ETag each held lock was last written
//! with.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use cert_core::{Error, Lease, LockToken, Locker, Result, validate_key};

use crate::S3Storage;
use crate::error::{Failure, Kind};
use crate::lock_object::{Condition, Current, LockBody};

/// How many times `try_acquire` starts over when the lock object vanishes between the
/// create attempt and the read.
const ACQUIRE_ROUNDS: usize = 3;

impl S3Storage {
    fn remember(&self, name: &str, token: &LockToken, etag: String) {
        self.inner
            .held
            .lock()
            .insert(name.to_owned(), (token.clone(), etag));
    }

    fn forget(&self, name: &str, token: &LockToken) {
        let mut held = self.inner.held.lock();
        if held.get(name).is_some_and(|(t, _)| t == token) {
            held.remove(name);
        }
    }

    /// The ETag of the lock object as `lease` last wrote it: remembered, or read back
    /// when the token is still the one in the object. `None` when `lease` is not the
    /// holder.
    async fn holder_etag(&self, lease: &Lease, object: &str) -> Result<Option<String>> {
        if let Some((token, etag)) = self.inner.held.lock().get(lease.name())
            && token == lease.token()
        {
            return Ok(Some(etag.clone()));
        }
        self.etag_if_ours(lease, object).await
    }

    /// After a conditional write answered 412 on a retried request: whether the lock
    /// object is the one this write put there (an earlier try landed).
    async fn landed(&self, object: &str, body: &LockBody) -> Result<Option<String>, Failure> {
        Ok(match self.read_lock(object).await? {
            Some(Current {
                body: Some(current),
                etag,
                ..
            }) if current.write == body.write => Some(etag),
            _ => None,
        })
    }

    /// The ETag of the lock object when it still carries `lease`'s token and the lease is
    /// live: then a write of this lease landed whose answer never arrived (a request that
    /// timed out on the client after the server applied it), and the remembered ETag is
    /// stale. `None` when the object is gone, carries another token, or the lease ran out.
    async fn etag_if_ours(&self, lease: &Lease, object: &str) -> Result<Option<String>> {
        if lease.is_expired() {
            return Ok(None);
        }
        match self
            .read_lock(object)
            .await
            .map_err(|failure| self.error(failure, lease.name()))?
        {
            Some(Current {
                body: Some(body),
                etag,
                ..
            }) if body.token == lease.token().as_str() => Ok(Some(etag)),
            _ => Ok(None),
        }
    }

    fn lost(name: &str) -> Error {
        Error::LockLost {
            name: name.to_owned(),
        }
    }
}

#[async_trait]
impl Locker for S3Storage {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        validate_key(name)?;
        self.ensure_conditional().await?;
        let object = self.lock_key(name);
        let error = |failure: Failure| self.error(failure, name);
        for _ in 0..ACQUIRE_ROUNDS {
            let token = LockToken::generate();
            let body = LockBody::new(&token, ttl);
            let started = Instant::now();
            match self
                .put_lock(&object, &body.bytes(), Condition::Create)
                .await
            {
                Ok(etag) => {
                    self.remember(name, &token, etag);
                    return Ok(Some(Lease::new(name, token, ttl, started)));
                }
                Err(failure) if failure.kind == Kind::Precondition => {}
                Err(failure) => return Err(error(failure)),
            }
            let Some(current) = self.read_lock(&object).await.map_err(error)? else {
                continue; // released in between: try to create it again
            };
            if current.body.as_ref().is_some_and(|b| b.write == body.write) {
                // An earlier try of the create landed; its answer was lost.
                self.remember(name, &token, current.etag);
                return Ok(Some(Lease::new(name, token, ttl, started)));
            }
            if !current.expired {
                return Ok(None);
            }
            let takeover = LockBody::new(&token, ttl);
            let started = Instant::now();
            return match self
                .put_lock(
                    &object,
                    &takeover.bytes(),
                    Condition::Replace(&current.etag),
                )
                .await
            {
                Ok(etag) => {
                    self.remember(name, &token, etag);
                    Ok(Some(Lease::new(name, token, ttl, started)))
                }
                Err(failure) if matches!(failure.kind, Kind::Precondition | Kind::NotFound) => {
                    if failure.retried
                        && let Some(etag) = self.landed(&object, &takeover).await.map_err(error)?
                    {
                        self.remember(name, &token, etag);
                        return Ok(Some(Lease::new(name, token, ttl, started)));
                    }
                    Ok(None) // another waiter took it first
                }
                Err(failure) => Err(error(failure)),
            };
        }
        Ok(None)
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        validate_key(lease.name())?;
        let name = lease.name();
        if lease.is_expired() {
            self.forget(name, lease.token());
            return Err(Self::lost(name));
        }
        let object = self.lock_key(name);
        let Some(mut etag) = self.holder_etag(lease, &object).await? else {
            return Err(Self::lost(name));
        };
        let body = LockBody::new(lease.token(), ttl);
        for attempt in 0..2 {
            let started = Instant::now();
            match self
                .put_lock(&object, &body.bytes(), Condition::Replace(&etag))
                .await
            {
                Ok(etag) => {
                    self.remember(name, lease.token(), etag);
                    return Ok(lease.renewed(ttl, started));
                }
                Err(failure) if matches!(failure.kind, Kind::Precondition | Kind::NotFound) => {
                    if failure.retried
                        && let Some(etag) = self
                            .landed(&object, &body)
                            .await
                            .map_err(|failure| self.error(failure, name))?
                    {
                        self.remember(name, lease.token(), etag);
                        return Ok(lease.renewed(ttl, started));
                    }
                    if attempt == 0
                        && failure.kind == Kind::Precondition
                        && let Some(current) = self.etag_if_ours(lease, &object).await?
                    {
                        etag = current;
                        continue;
                    }
                    break;
                }
                Err(failure) => return Err(self.error(failure, name)),
            }
        }
        self.forget(name, lease.token());
        Err(Self::lost(name))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        validate_key(lease.name())?;
        let name = lease.name();
        // A lease past its deadline may already belong to another node, which then wrote
        // the object anew; but it may also be that nobody has taken over yet, and deleting
        // the object then would free a lock this caller no longer holds. Either way the
        // honest answer is LockLost, and the object is left for the server's expiry.
        if lease.is_expired() {
            self.forget(name, lease.token());
            return Err(Self::lost(name));
        }
        let object = self.lock_key(name);
        let Some(mut etag) = self.holder_etag(lease, &object).await? else {
            self.forget(name, lease.token());
            return Err(Self::lost(name));
        };
        let mut outcome = Err(Self::lost(name));
        for attempt in 0..2 {
            let result = self.delete_lock(&object, &etag).await;
            outcome = match result {
                // Deleted, but the deadline passed while the request ran: whatever was
                // done under the lease may have overlapped with a takeover, so say so.
                Ok(()) if lease.is_expired() => Err(Self::lost(name)),
                Ok(()) => Ok(()),
                // An earlier try of the delete landed and its answer was lost.
                Err(failure) if failure.kind == Kind::NotFound && failure.retried => Ok(()),
                Err(failure) if failure.kind == Kind::Precondition => {
                    match self.etag_if_ours(lease, &object).await? {
                        // Still ours under another ETag: a refresh of this lease landed
                        // without its answer arriving. Delete that object, once.
                        Some(current) if attempt == 0 => {
                            etag = current;
                            continue;
                        }
                        Some(_) => Err(Self::lost(name)),
                        // An earlier try of this delete landed, and another node has taken
                        // the free lock since: while the lease is live no one else can
                        // replace the object this lease wrote.
                        None if failure.retried && !lease.is_expired() => Ok(()),
                        None => Err(Self::lost(name)),
                    }
                }
                Err(failure) if failure.kind == Kind::NotFound => Err(Self::lost(name)),
                Err(failure) => Err(self.error(failure, name)),
            };
            break;
        }
        self.forget(name, lease.token());
        outcome
    }

    fn lock_admin(&self) -> Option<&dyn cert_core::LockAdmin> {
        Some(self)
    }
}
