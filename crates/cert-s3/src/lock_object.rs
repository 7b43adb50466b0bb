//! Lock objects: what one holds, how it is written under a condition, read back with its
//! expiry judged by the server's clock, and deleted only while unchanged.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat};
use cert_core::LockToken;
use serde::{Deserialize, Serialize};

use crate::S3Storage;
use crate::error::{Failure, Kind, Message};
use crate::storage::system_time;

/// The resolution of the HTTP dates expiry is judged by.
const DATE_RESOLUTION: Duration = Duration::from_secs(1);

/// What a lock object holds.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LockBody {
    /// The holder's token.
    pub(crate) token: String,
    /// The lease's time to live, in milliseconds, counted from the object's
    /// `Last-Modified`.
    pub(crate) ttl_ms: u64,
    /// Random per write, so every write has a new ETag and a retried request can tell
    /// whether its earlier try landed.
    pub(crate) write: String,
}

impl LockBody {
    pub(crate) fn new(token: &LockToken, ttl: Duration) -> Self {
        LockBody {
            token: token.as_str().to_owned(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            write: LockToken::generate().as_str().to_owned(),
        }
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A lock object as read back.
pub(crate) struct Current {
    /// `None` when the object does not parse (then it counts as expired a second after
    /// it was written).
    pub(crate) body: Option<LockBody>,
    pub(crate) etag: String,
    pub(crate) expired: bool,
    /// When it was written (`Last-Modified`).
    pub(crate) written: SystemTime,
    /// How long until it expires, by the server's clock (zero once expired).
    pub(crate) left: Duration,
}

/// The condition of a lock write.
#[derive(Clone, Copy)]
pub(crate) enum Condition<'a> {
    /// `If-None-Match: *`: only if no lock object exists.
    Create,
    /// `If-Match: etag`: only if the lock object is still the one with this ETag.
    Replace(&'a str),
}

impl S3Storage {
    /// Writes a lock object under `condition`; returns the new ETag.
    pub(crate) async fn put_lock(
        &self,
        object: &str,
        body: &[u8],
        condition: Condition<'_>,
    ) -> Result<String, Failure> {
        let out = self
            .send(|client, bucket| {
                let request = client
                    .put_object()
                    .bucket(bucket)
                    .key(object)
                    .content_type("application/json")
                    .body(ByteStream::from(body.to_vec()));
                let request = match condition {
                    Condition::Create => request.if_none_match("*"),
                    Condition::Replace(etag) => request.if_match(etag),
                };
                request.send()
            })
            .await?;
        out.e_tag()
            .map(str::to_owned)
            .ok_or_else(|| Failure::from(Message(format!("no ETag for {object}"))))
    }

    /// Reads a lock object and judges whether it has expired by the server's clock:
    /// `Date` of this response >= `Last-Modified` + 1 s + ttl. `None` when absent.
    pub(crate) async fn read_lock(&self, object: &str) -> Result<Option<Current>, Failure> {
        let fetched = match self.get_object(object, true).await {
            Ok(fetched) => fetched,
            Err(failure) if failure.kind == Kind::NotFound => return Ok(None),
            Err(failure) => return Err(failure),
        };
        let etag = fetched
            .etag
            .ok_or_else(|| Failure::from(Message(format!("no ETag for {object}"))))?;
        let modified = fetched
            .modified
            .ok_or_else(|| Failure::from(Message(format!("no Last-Modified for {object}"))))?;
        let body: Option<LockBody> = serde_json::from_slice(&fetched.bytes).ok();
        let ttl = body
            .as_ref()
            .map_or(Duration::ZERO, |b| Duration::from_millis(b.ttl_ms));
        let now = match fetched
            .date
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
    pub(crate) async fn delete_lock(&self, object: &str, etag: &str) -> Result<(), Failure> {
        self.send(|client, bucket| {
            client
                .delete_object()
                .bucket(bucket)
                .key(object)
                .if_match(etag)
                .send()
        })
        .await?;
        Ok(())
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
