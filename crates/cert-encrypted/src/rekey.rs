//! Re-sealing stored values under the current key after a rotation.

use std::sync::Arc;

use cert_core::{Error, LockGuard, LockOptions, Locker, Result, Storage, lock, validate_prefix};
use zeroize::Zeroizing;

use crate::encrypted::Encrypted;
use crate::envelope::looks_sealed;
use crate::ring::KeyRing;

/// The lock every [`Encrypted::rekey`] holds, whatever its prefix, so two re-keyings of
/// one storage never interleave.
pub const REKEY_LOCK: &str = "cert-encrypted/rekey";

/// How many times a value that changes under a re-keying is retried before giving up.
const ATTEMPTS: usize = 5;

/// Where a re-keying stands; passed to the progress callback after each key and returned
/// at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RekeyProgress {
    /// Keys handled so far.
    pub done: usize,
    /// Keys found below the prefix when the run started.
    pub total: usize,
    /// Values re-sealed under the current key by this run.
    pub resealed: usize,
    /// Values already sealed by the current key, left alone.
    pub already_current: usize,
    /// Keys deleted by someone else while the run went on.
    pub vanished: usize,
}

enum Outcome {
    Resealed,
    AlreadyCurrent,
    Vanished,
}

impl<S: Storage + Locker> Encrypted<S> {
    /// Re-seals every value below `prefix` (`""` for the whole storage) under the ring's
    /// current key, holding the cluster lock [`REKEY_LOCK`] with default
    /// [`LockOptions`]. See [`rekey_with`](Encrypted::rekey_with).
    pub async fn rekey(
        &self,
        prefix: &str,
        progress: impl FnMut(&RekeyProgress) + Send,
    ) -> Result<RekeyProgress> {
        self.rekey_with(prefix, &LockOptions::default(), progress)
            .await
    }

    /// Re-seals every value below `prefix` under the ring's current key.
    ///
    /// - Values already sealed by the current key are skipped, so the run is resumable:
    ///   after an interruption, running it again finishes the rest.
    /// - It first takes the cluster lock [`REKEY_LOCK`] (waiting as `options` say), so
    ///   two re-keyings never interleave, and stops with [`Error::LockLost`] if the lease
    ///   is lost.
    /// - `progress` is called once before the first key and after each key.
    /// - A value that does not open stops the run with [`Error::Corrupt`] naming it. In
    ///   plaintext migration mode, plain values are sealed.
    /// - Before writing, the value is read again and written only if unchanged, so a
    ///   concurrent write by a node is not overwritten with older content except within
    ///   the short window between that check and the write (storages offer no
    ///   compare-and-swap). Rotate while writes are rare, or pause them.
    ///
    /// Once it returns `Ok`, no value below `prefix` is sealed by an older key, and the
    /// older keys can be removed from the ring.
    pub async fn rekey_with(
        &self,
        prefix: &str,
        options: &LockOptions,
        mut progress: impl FnMut(&RekeyProgress) + Send,
    ) -> Result<RekeyProgress> {
        validate_prefix(prefix)?;
        let locker: Arc<dyn Locker> = Arc::clone(self.inner_arc()) as Arc<dyn Locker>;
        let guard = lock(locker, REKEY_LOCK, options).await?;
        let result = self.rekey_locked(prefix, &guard, &mut progress).await;
        let released = guard.release().await;
        let done = result?;
        released?;
        Ok(done)
    }

    async fn rekey_locked(
        &self,
        prefix: &str,
        guard: &LockGuard,
        progress: &mut (impl FnMut(&RekeyProgress) + Send),
    ) -> Result<RekeyProgress> {
        let keys = self.inner().list(prefix, true).await?;
        let mut state = RekeyProgress {
            total: keys.len(),
            ..RekeyProgress::default()
        };
        progress(&state);
        for key in keys {
            if guard.is_lost() {
                return Err(Error::LockLost {
                    name: REKEY_LOCK.to_owned(),
                });
            }
            match self.rekey_one(&key).await? {
                Outcome::Resealed => state.resealed += 1,
                Outcome::AlreadyCurrent => state.already_current += 1,
                Outcome::Vanished => state.vanished += 1,
            }
            state.done += 1;
            progress(&state);
        }
        tracing::info!(
            prefix,
            total = state.total,
            resealed = state.resealed,
            already_current = state.already_current,
            "re-keying finished"
        );
        Ok(state)
    }

    async fn rekey_one(&self, key: &str) -> Result<Outcome> {
        let current = self.ring().current_id();
        let mut raw = match self.inner().load(key).await {
            Ok(raw) => raw,
            Err(Error::NotFound { .. }) => return Ok(Outcome::Vanished),
            Err(err) => return Err(err),
        };
        for _ in 0..ATTEMPTS {
            if KeyRing::sealed_by(&raw) == Some(current) {
                return Ok(Outcome::AlreadyCurrent);
            }
            let plain = if self.plaintext_migration() && !looks_sealed(&raw) {
                Zeroizing::new(raw.clone())
            } else {
                Zeroizing::new(
                    self.ring()
                        .open(key, &raw)
                        .map_err(|err| Error::corrupt(key, err))?,
                )
            };
            let sealed = self.ring().seal(key, &plain)?;
            match self.inner().load(key).await {
                Ok(now) if now == raw => {
                    self.inner().store(key, &sealed).await?;
                    return Ok(Outcome::Resealed);
                }
                Ok(now) => raw = now,
                Err(Error::NotFound { .. }) => return Ok(Outcome::Vanished),
                Err(err) => return Err(err),
            }
        }
        Err(Error::Conflict {
            key: key.to_owned(),
            reason: format!("the value kept changing during {ATTEMPTS} re-keying attempts"),
        })
    }
}
