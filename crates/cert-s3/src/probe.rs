//! The check that the server honours conditional writes, made once per storage before
//! its first lock operation: locks are refused on a server that ignores them.

use cert_core::{LockToken, Result};

use crate::error::Kind;
use crate::lock_object::Condition;
use crate::{PROBE_DIR, S3Storage, message};

impl S3Storage {
    /// Fails unless the server honours conditional writes, probing it on first use.
    pub(crate) async fn ensure_conditional(&self) -> Result<()> {
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
}
