//! The cleaning rule for certificate records, shared by the engine and the CLI.

use std::sync::Arc;

use super::{CertificateId, RecordState, load_certificate, remove_certificate};
use crate::{Error, LockOptions, Locker, Result, Storage, Store, try_lock};

/// What [`remove_expired`] did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expiry {
    /// Left in place: absent, unusable (the engine issues the name again; an operator
    /// removes it with `certstore rm`), or not expired before the cutoff.
    Kept,
    /// Expired before the cutoff, but its name's issuance lock is held (a node may be
    /// renewing it) or was lost during the removal: left for the next pass.
    Busy {
        /// End of validity, seconds since the Unix epoch.
        not_after: i64,
    },
    /// Removed.
    Removed {
        /// End of validity, seconds since the Unix epoch.
        not_after: i64,
    },
}

/// The cleaning rule: when the record `id` is a usable certificate whose validity ended
/// before `cutoff` (seconds since the Unix epoch), its end of validity. Unusable records
/// are never cleaned: they are reported, and removed by hand.
pub async fn expired_before(
    storage: &dyn Storage,
    id: &CertificateId,
    cutoff: i64,
) -> Result<Option<i64>> {
    Ok(match load_certificate(storage, id).await? {
        Some(RecordState::Valid(loaded)) if loaded.stored.meta.not_after < cutoff => {
            Some(loaded.stored.meta.not_after)
        }
        _ => None,
    })
}

/// Removes the record `id` when it is expired by [`expired_before`], under its name's
/// issuance lock ([`CertificateId::issue_lock`]): one attempt to take it (a held lock means a node
/// may be renewing the name, so it is left for the next pass), the rule checked again
/// once the lock is held (it may have been renewed meanwhile), and every delete fenced by
/// the lease. The engine's cleaning and `certstore clean` both use it.
pub async fn remove_expired(
    store: &Arc<dyn Store>,
    id: &CertificateId,
    cutoff: i64,
    options: &LockOptions,
) -> Result<Expiry> {
    let Some(not_after) = expired_before(store.as_ref(), id, cutoff).await? else {
        return Ok(Expiry::Kept);
    };
    let locker: Arc<dyn Locker> = store.clone();
    let Some(guard) = try_lock(locker, &id.issue_lock(), options).await? else {
        return Ok(Expiry::Busy { not_after });
    };
    let result = async {
        let Some(not_after) = expired_before(store.as_ref(), id, cutoff).await? else {
            return Ok(Expiry::Kept);
        };
        let lease = guard.lease();
        match remove_certificate(store.as_ref(), id, Some(&lease)).await {
            Ok(_) => Ok(Expiry::Removed { not_after }),
            Err(Error::LockLost { .. }) => Ok(Expiry::Busy { not_after }),
            Err(err) => Err(err),
        }
    }
    .await;
    if let Err(err) = guard.release().await {
        tracing::debug!(record = %id, error = %err, "releasing the issuance lock failed");
    }
    result
}
