//! The [`Locker`] implementation: lock objects taken and kept with conditional writes
//! (see the crate docs for the algorithm).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat};
use cert_core::{Error, Lease, LockToken, Locker, Result, validate_key};
use serde::{Deserialize, Serialize};

use crate::error::{Failure, Kind, classify};
use crate::storage::system_time;
use crate::{LOCK_DIR, PROBE_DIR, S3Storage, message};

/// The resolution of the HTTP dates expiry is judged by.
const DATE_RESOLUTION: Duration = Duration::from_secs(1);

/// How many times `try_acquire` starts over when the lock object vanishes between the
/// create attempt and the read.
const ACQUIRE_ROUNDS: usize = 3;

/// What a lock object holds.
#[derive(Debug, Serialize, Deserialize)]
struct LockBody {
    /// The holder's token.
    token: String,
    /// The lease's time to live, in milliseconds, counted from the object's
    /// `Last-Modified`.
    ttl_ms: u64,
    /// Random per write, so every write has a new ETag and a retried request can tell
    /// whether its earlier try landed.
    write: String,
}

impl LockBody {
    fn new(token: &LockToken, ttl: Duration) -> Self {
        LockBody {
            token: token.as_str().to_owned(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            write: LockToken::generate().as_str().to_owned(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A lock object as read back.
struct Current {
    /// `None` when the object does not parse (then it counts as expired a second after
    /// it was written).
    body: Option<LockBody>,
    etag: String,
    expired: bool,
    /// When it was written (`Last-Modified`).
    written: SystemTime,
    /// How long until it expires, by the server's clock (zero once expired).
    left: Duration,
}

/// Keeps the `Date` header of a response: the server's clock.
#[derive(Debug)]
struct DateCapture(Arc<parking_lot::Mutex<Option<String>>>);

impl Intercept for DateCapture {
    fn name(&self) -> &'static str {
        "certstore-date-capture"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), cert_core::BoxError> {
        *self.0.lock() = context.response().headers().get("date").map(str::to_owned);
        Ok(())
    }
}

/// The condition of a lock write.
#[derive(Clone, Copy)]
enum Condition<'a> {
    /// `If-None-Match: *`: only if no lock object exists.
    Create,
    /// `If-Match: etag`: only if the lock object is still the one with this ETag.
    Replace(&'a str),
}

impl S3Storage {
    /// Writes a lock object under `condition`; returns the new ETag.
    async fn put_lock(
        &self,
        object: &str,
        body: &[u8],
        condition: Condition<'_>,
    ) -> Result<String, Failure> {
        let inner = &self.inner;
        let out = inner
            .retry
            .run(|| async move {
                let request = inner
                    .client
                    .put_object()
                    .bucket(&inner.bucket)
                    .key(object)
                    .content_type("application/json")
                    .body(ByteStream::from(body.to_vec()));
                let request = match condition {
                    Condition::Create => request.if_none_match("*"),
                    Condition::Replace(etag) => request.if_match(etag),
                };
                request.send().await.map_err(classify)
            })
            .await?;
        out.e_tag()
            .map(str::to_owned)
            .ok_or_else(|| Failure::from(crate::error::Message(format!("no ETag for {object}"))))
    }

    /// Reads a lock object and judges whether it has expired by the server's clock:
    /// `Date` of this response >= `Last-Modified` + 1 s + ttl. `None` when absent.
    async fn read_lock(&self, object: &str) -> Result<Option<Current>, Failure> {
        let inner = &self.inner;
        let result = inner
            .retry
            .run(|| async move {
                let date = Arc::new(parking_lot::Mutex::new(None::<String>));
                let seen = Arc::clone(&date);
                let out = inner
                    .client
                    .get_object()
                    .bucket(&inner.bucket)
                    .key(object)
                    .customize()
                    .interceptor(DateCapture(seen))
                    .send()
                    .await
                    .map_err(classify)?;
                let etag = out.e_tag().map(str::to_owned);
                let modified = out.last_modified().copied();
                let bytes = out.body.collect().await.map_err(|err| Failure {
                    kind: Kind::Transient,
                    source: Box::new(err),
                    retried: false,
                })?;
                let date = date.lock().take();
                Ok((etag, modified, bytes.into_bytes().to_vec(), date))
            })
            .await;
        let (etag, modified, bytes, date) = match result {
            Ok(read) => read,
            Err(failure) if failure.kind == Kind::NotFound => return Ok(None),
            Err(failure) => return Err(failure),
        };
        let etag = etag
            .ok_or_else(|| Failure::from(crate::error::Message(format!("no ETag for {object}"))))?;
        let modified = modified.ok_or_else(|| {
            Failure::from(crate::error::Message(format!(
                "no Last-Modified for {object}"
            )))
        })?;
        let body: Option<LockBody> = serde_json::from_slice(&bytes).ok();
        let ttl = body
            .as_ref()
            .map_or(Duration::ZERO, |b| Duration::from_millis(b.ttl_ms));
        let now = match date
            .as_deref()
            .and_then(|d| DateTime::from_str(d, DateTimeFormat::HttpDate).ok())
        {
            Some(date) => system_time(Some(&date)),
            None => {
                tracing::warn!(
                    "the S3 server sent no Date header; judging lock expiry by the local clock"
                );
                SystemTime::now()
            }
        };
        let written = system_time(Some(&modified));
        let deadline = written.checked_add(DATE_RESOLUTION + ttl);
        let expired = deadline.is_some_and(|deadline| now >= deadline);
        let left = deadline.map_or(Duration::MAX, |deadline| {
            deadline.duration_since(now).unwrap_or(Duration::ZERO)
        });
        Ok(Some(Current {
            body,
            etag,
            expired,
            written,
            left,
        }))
    }

    /// Deletes a lock object only if it still has `etag`.
    async fn delete_lock(&self, object: &str, etag: &str) -> Result<(), Failure> {
        let inner = &self.inner;
        inner
            .retry
            .run(|| async move {
                inner
                    .client
                    .delete_object()
                    .bucket(&inner.bucket)
                    .key(object)
                    .if_match(etag)
                    .send()
                    .await
                    .map_err(classify)
            })
            .await?;
        Ok(())
    }

    /// Fails unless the server honours conditional writes, probing it on first use.
    async fn ensure_conditional(&self) -> Result<()> {
        let honoured = self
            .inner
            .conditional
            .get_or_try_init(|| self.probe())
            .await?;
        if *honoured {
            Ok(())
        } else {
            Err(message(format!(
                "the S3 server{} does not honour conditional writes (If-None-Match: * on \
                 PUT, If-Match on PUT and DELETE): locks on it would not be exclusive, so \
                 this storage refuses to lock; use a server that supports conditional \
                 writes (AWS S3, MinIO, ...)",
                self.inner
                    .endpoint
                    .as_deref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default()
            )))
        }
    }

    /// Writes one probe object twice with `If-None-Match: *` (the second must fail),
    /// once with `If-Match` on a wrong ETag (which must fail too), and deletes it with
    /// `If-Match` on a wrong ETag (which must fail as well), then deletes it for good.
    async fn probe(&self) -> Result<bool> {
        let object = format!(
            "{}{PROBE_DIR}/{}",
            self.inner.root,
            LockToken::generate().as_str()
        );
        let key = object.as_str();
        self.put_lock(key, b"1", Condition::Create)
            .await
            .map_err(|failure| self.error(failure, key))?;
        let honoured = match self.put_lock(key, b"2", Condition::Create).await {
            Ok(_) => false,
            Err(failure) if failure.kind == Kind::Precondition && !failure.retried => {
                let wrong = "\"00000000000000000000000000000000\"";
                match self.put_lock(key, b"3", Condition::Replace(wrong)).await {
                    Ok(_) => false,
                    Err(failure) if failure.kind == Kind::Precondition => {
                        // Release and forced release rely on a conditional DELETE; a
                        // server that deletes regardless would let a stale holder free
                        // a lock taken over by another node.
                        match self.delete_lock(key, wrong).await {
                            Ok(()) => false,
                            Err(failure) if failure.kind == Kind::Precondition => true,
                            Err(failure) => return Err(self.error(failure, key)),
                        }
                    }
                    Err(failure) => return Err(self.error(failure, key)),
                }
            }
            Err(failure) => return Err(self.error(failure, key)),
        };
        let inner = &self.inner;
        let cleanup = inner
            .client
            .delete_object()
            .bucket(&inner.bucket)
            .key(key)
            .send()
            .await;
        if let Err(err) = cleanup {
            tracing::debug!(error = %err, "could not delete the S3 probe object");
        }
        if !honoured {
            tracing::error!(
                bucket = %inner.bucket,
                "the S3 server does not honour conditional writes; locking is refused"
            );
        }
        Ok(honoured)
    }

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
        let Some(etag) = self.holder_etag(lease, &object).await? else {
            return Err(Self::lost(name));
        };
        let body = LockBody::new(lease.token(), ttl);
        let started = Instant::now();
        match self
            .put_lock(&object, &body.bytes(), Condition::Replace(&etag))
            .await
        {
            Ok(etag) => {
                self.remember(name, lease.token(), etag);
                Ok(lease.renewed(ttl, started))
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
                self.forget(name, lease.token());
                Err(Self::lost(name))
            }
            Err(failure) => Err(self.error(failure, name)),
        }
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
        let Some(etag) = self.holder_etag(lease, &object).await? else {
            self.forget(name, lease.token());
            return Err(Self::lost(name));
        };
        let result = self.delete_lock(&object, &etag).await;
        self.forget(name, lease.token());
        match result {
            // Deleted, but the deadline passed while the request ran: whatever was done
            // under the lease may have overlapped with a takeover, so say so.
            Ok(()) if lease.is_expired() => Err(Self::lost(name)),
            Ok(()) => Ok(()),
            // An earlier try of the delete landed and its answer was lost.
            Err(failure) if failure.kind == Kind::NotFound && failure.retried => Ok(()),
            // The same, but another node has taken the free lock since: while the lease is
            // live no one else can replace the object this lease wrote, so an object that
            // no longer carries its token was deleted by that earlier try. (One that still
            // does means the remembered ETag was stale: the lease is not what it thought.)
            Err(failure)
                if failure.kind == Kind::Precondition && failure.retried && !lease.is_expired() =>
            {
                match self
                    .read_lock(&object)
                    .await
                    .map_err(|failure| self.error(failure, name))?
                {
                    Some(Current {
                        body: Some(body), ..
                    }) if body.token == lease.token().as_str() => Err(Self::lost(name)),
                    _ => Ok(()),
                }
            }
            Err(failure) if matches!(failure.kind, Kind::Precondition | Kind::NotFound) => {
                Err(Self::lost(name))
            }
            Err(failure) => Err(self.error(failure, name)),
        }
    }
}

/// Operator access: the lock objects listed with holder and time left, and removed
/// whatever their holder (conditioned on the object read, so a lock taken over meanwhile
/// is not removed by mistake).
#[async_trait]
impl cert_core::LockAdmin for S3Storage {
    async fn list_locks(&self) -> Result<Vec<cert_core::LockInfo>> {
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
                cert_core::LockInfo::new(name, token)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_has_a_new_body() {
        let token = LockToken::generate();
        let a = LockBody::new(&token, Duration::from_secs(5));
        let b = LockBody::new(&token, Duration::from_secs(5));
        assert_ne!(a.bytes(), b.bytes());
        let back: LockBody = serde_json::from_slice(&a.bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.token, token.as_str());
        assert_eq!(back.ttl_ms, 5000);
    }
}
