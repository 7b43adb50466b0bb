//! Cleaning: removing certificates that expired long ago, and expired locks.

use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;

use super::{CertManager, Event};
use crate::certificate::{system_to_unix, unix_to_system};
use crate::record;
use crate::{Error, LockOptions, Locker, StorageExt, keys, try_lock};

/// When the cluster last cleaned, seconds since the Unix epoch.
const MARK: &str = "maintenance/last-clean.json";

impl CertManager {
    /// Removes certificates expired for longer than the grace period from storage, under a
    /// cluster-wide lock, at most once per `clean_interval` across the cluster. Returns the
    /// prefixes removed (empty when another node cleaned recently or is cleaning now).
    ///
    /// Each certificate is removed under its name's issuance lock, fenced by it, so
    /// cleaning never races a node that is renewing that name; a name whose lock is held
    /// is left for the next pass.
    pub async fn clean_if_due(&self) -> Result<Vec<String>, Error> {
        let locker: Arc<dyn Locker> = self.inner.storage.clone();
        let Some(guard) = try_lock(locker, keys::CLEAN_LOCK, &LockOptions::default()).await? else {
            return Ok(Vec::new());
        };
        let result = self.clean_locked().await;
        let _ = guard.release().await;
        result
    }

    async fn clean_locked(&self) -> Result<Vec<String>, Error> {
        let storage = self.inner.storage.as_ref();
        let now = SystemTime::now();
        if let Some(last) = storage.load_opt(MARK).await? {
            let last: i64 = serde_json::from_slice(&last).unwrap_or(0);
            let next = unix_to_system(last) + self.inner.config.clean_interval;
            if now < next {
                return Ok(Vec::new());
            }
        }
        let cutoff = system_to_unix(now - self.inner.config.clean_grace);
        // Records are looked at `concurrency` at a time: the pass's storage round trips
        // overlap instead of adding up, and no more than that many are in flight.
        let mut checks = futures::stream::iter(record::scan_certificates(storage).await?)
            .map(|entry| async move {
                // The rule `certstore clean` applies too: broken records are the engine's
                // to repair or an operator's to remove; a name whose lock is held is left.
                let outcome = record::remove_expired(
                    &self.inner.storage,
                    &entry.id,
                    cutoff,
                    &self.inner.config.lock,
                )
                .await?;
                Ok::<_, Error>(
                    matches!(outcome, record::Expiry::Removed { .. }).then(|| entry.id.prefix()),
                )
            })
            .buffer_unordered(self.inner.config.concurrency.max(1));
        let mut removed = Vec::new();
        while let Some(checked) = checks.next().await {
            if let Some(prefix) = checked? {
                self.emit(Event::Cleaned {
                    prefix: prefix.clone(),
                });
                removed.push(prefix);
            }
        }
        drop(checks);
        removed.sort();
        self.remove_stale_issuances(now - self.inner.config.clean_grace)
            .await;
        match storage.clean_expired_locks().await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "removed expired locks"),
            Err(err) => tracing::warn!(error = %err, "removing expired locks failed"),
        }
        storage.store_json(MARK, &system_to_unix(now)).await?;
        Ok(removed)
    }

    /// Removes issuance keys and ACME order records last written before `cutoff`: left
    /// by names no longer managed, or by issuances that failed for that long (the next
    /// attempt then starts afresh). Failures are logged and left for the next pass.
    async fn remove_stale_issuances(&self, cutoff: SystemTime) {
        let storage = self.inner.storage.as_ref();
        let mut candidates = Vec::new();
        for (prefix, wanted) in [(keys::PENDING, None), (keys::ACME, Some("/orders/"))] {
            match storage.list(prefix, true).await {
                Ok(listed) => candidates.extend(
                    listed
                        .into_iter()
                        .filter(|key| wanted.is_none_or(|part| key.contains(part))),
                ),
                Err(Error::NotFound { .. }) => {}
                Err(err) => tracing::warn!(prefix, error = %err, "listing issuance state failed"),
            }
        }
        futures::stream::iter(candidates)
            .for_each_concurrent(self.inner.config.concurrency.max(1), |key| async move {
                let stale = match storage.stat(&key).await {
                    Ok(info) => info.is_terminal && info.modified < cutoff,
                    Err(_) => false,
                };
                if stale && let Err(err) = storage.delete(&key).await {
                    tracing::warn!(key, error = %err, "removing stale issuance state failed");
                }
            })
            .await;
    }
}
