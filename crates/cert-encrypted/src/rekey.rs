//! Re-sealing stored values under the current key after a rotation.

use std::sync::Arc;

use cert_core::record::CertificateId;
use cert_core::{
    Error, Lease, LockGuard, LockOptions, Locker, Result, Storage, lock, validate_prefix,
};
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

impl Outcome {
    /// Counts this outcome of one more key.
    fn count(self, state: &mut RekeyProgress) {
        match self {
            Outcome::Resealed => state.resealed += 1,
            Outcome::AlreadyCurrent => state.already_current += 1,
            Outcome::Vanished => state.vanished += 1,
        }
        state.done += 1;
    }
}

/// Stops the run once the re-keying lease is lost.
fn check_lease(guard: &LockGuard) -> Result<()> {
    if guard.is_lost() {
        return Err(Error::LockLost {
            name: REKEY_LOCK.to_owned(),
        });
    }
    Ok(())
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
    /// - Values already sealed by the current key are opened (authenticated) and
    ///   otherwise left alone, so the run is resumable:
    ///   after an interruption, running it again finishes the rest.
    /// - It first takes the cluster lock [`REKEY_LOCK`] (waiting as `options` say), so
    ///   two re-keyings never interleave, and stops with [`Error::LockLost`] if the lease
    ///   is lost.
    /// - `progress` is called once before the first key and after each key.
    /// - A value that does not open stops the run with [`Error::Corrupt`] naming it. In
    ///   plaintext migration mode, plain values are sealed.
    /// - It never writes an older value over a newer one:
    ///   - the values of a certificate record (everything below
    ///     `certificates/<issuer>/<name>/`) are re-sealed while holding that name's
    ///     issuance lock ([`cert_core::keys::issue_lock`], waited for as `options` say), the lock
    ///     under which the engine, `certstore import` and `certstore rm` write records,
    ///     and every write is fenced by its lease ([`Storage::store_fenced`]): no writer
    ///     that takes the lock can interleave with it;
    ///   - any other value is read again right before the write and written only if
    ///     unchanged; a value that changed is not written from the old read but handled
    ///     again from its new content (left alone if its writer sealed it with the
    ///     current key). The remaining window is the moment between that second read and
    ///     the write (storages offer no compare-and-swap): a write landing inside it is
    ///     overwritten with the content read just before it. Those values (ACME
    ///     accounts, the internal CA, challenges, maintenance state) are written rarely;
    ///     rotate while nothing is being set up, or pause the writers.
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
        self.verify_keys().await?;
        let locker: Arc<dyn Locker> = Arc::clone(self.inner_arc()) as Arc<dyn Locker>;
        let guard = lock(locker, REKEY_LOCK, options).await?;
        let result = self
            .rekey_locked(prefix, &guard, options, &mut progress)
            .await;
        let released = guard.release().await;
        let done = result?;
        released?;
        Ok(done)
    }

    async fn rekey_locked(
        &self,
        prefix: &str,
        guard: &LockGuard,
        options: &LockOptions,
        progress: &mut (impl FnMut(&RekeyProgress) + Send),
    ) -> Result<RekeyProgress> {
        // Check values stay sealed by the key they check.
        let mut keys = self.inner().list(prefix, true).await?;
        keys.retain(|key| !crate::keycheck::is_reserved(key));
        let mut state = RekeyProgress {
            total: keys.len(),
            ..RekeyProgress::default()
        };
        progress(&state);
        let mut rest = keys.as_slice();
        while let Some(first) = rest.first() {
            let end = match CertificateId::of_key(first) {
                // The listing is sorted, so a record's values come one after another.
                Some(id) => {
                    let end = rest
                        .iter()
                        .position(|key| CertificateId::of_key(key).as_ref() != Some(&id))
                        .unwrap_or(rest.len());
                    self.rekey_record(&id, &rest[..end], guard, options, &mut state, progress)
                        .await?;
                    end
                }
                None => {
                    check_lease(guard)?;
                    self.rekey_one(first, None).await?.count(&mut state);
                    progress(&state);
                    1
                }
            };
            rest = &rest[end..];
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

    /// Re-seals the values of one certificate record under its name's issuance lock, every
    /// write fenced by that lock's lease.
    async fn rekey_record(
        &self,
        id: &CertificateId,
        keys: &[String],
        guard: &LockGuard,
        options: &LockOptions,
        state: &mut RekeyProgress,
        progress: &mut (impl FnMut(&RekeyProgress) + Send),
    ) -> Result<()> {
        check_lease(guard)?;
        let locker: Arc<dyn Locker> = Arc::clone(self.inner_arc()) as Arc<dyn Locker>;
        let record_lock = lock(locker, &id.issue_lock(), options).await?;
        let lease = record_lock.lease();
        let result = async {
            for key in keys {
                check_lease(guard)?;
                self.rekey_one(key, Some(&lease)).await?.count(state);
                progress(state);
            }
            Ok(())
        }
        .await;
        if let Err(err) = record_lock.release().await {
            tracing::debug!(record = %id, error = %err, "releasing the issuance lock failed");
        }
        result
    }

    /// Re-seals one value; with `lease`, the write is fenced by it.
    async fn rekey_one(&self, key: &str, lease: Option<&Lease>) -> Result<Outcome> {
        let current = self.ring().current_id();
        let mut raw = match self.inner().load(key).await {
            Ok(raw) => raw,
            Err(Error::NotFound { .. }) => return Ok(Outcome::Vanished),
            Err(err) => return Err(err),
        };
        for _ in 0..ATTEMPTS {
            if KeyRing::sealed_by(&raw) == Some(current) {
                // The id alone proves nothing (a forged or damaged envelope, a wrong key
                // given the same id): the value is done only if it opens.
                self.ring()
                    .open(key, &raw)
                    .map_err(|err| Error::corrupt(key, err))?;
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
                    match lease {
                        Some(lease) => self.inner().store_fenced(key, &sealed, lease).await?,
                        None => self.inner().store(key, &sealed).await?,
                    }
                    return Ok(Outcome::Resealed);
                }
                // Changed since it was read: what was sealed is older than what is there
                // now, so it is dropped and the new content handled instead.
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use cert_core::{KeyInfo, MemoryStorage, async_trait};

    use super::*;
    use crate::SecretKey;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_bytes([n; 32])
    }

    fn rotated() -> KeyRing {
        KeyRing::new(key(2)).with_previous(key(1)).unwrap()
    }

    /// A write another node makes: the key and the raw (sealed) value.
    type Write = (String, Vec<u8>);

    /// A storage where another node writes `next` to its key right after the re-keying
    /// first reads that key: the write lands between the read and the re-seal.
    #[derive(Debug, Clone)]
    struct Racing {
        inner: MemoryStorage,
        next: Arc<Mutex<Option<Write>>>,
    }

    #[async_trait]
    impl Storage for Racing {
        async fn store(&self, key: &str, value: &[u8]) -> Result<()> {
            self.inner.store(key, value).await
        }
        async fn load(&self, key: &str) -> Result<Vec<u8>> {
            let value = self.inner.load(key).await?;
            let pending = self.next.lock().unwrap().take_if(|(k, _)| k == key);
            if let Some((key, newer)) = pending {
                self.inner.store(&key, &newer).await?;
            }
            Ok(value)
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
        async fn exists(&self, key: &str) -> Result<bool> {
            self.inner.exists(key).await
        }
        async fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
            self.inner.list(prefix, recursive).await
        }
        async fn stat(&self, key: &str) -> Result<KeyInfo> {
            self.inner.stat(key).await
        }
    }

    #[async_trait]
    impl Locker for Racing {
        async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
            self.inner.try_acquire(name, ttl).await
        }
        async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
            self.inner.refresh(lease, ttl).await
        }
        async fn release(&self, lease: &Lease) -> Result<()> {
            self.inner.release(lease).await
        }
    }

    #[tokio::test]
    async fn a_value_written_between_read_and_reseal_is_not_overwritten() {
        // The concurrent writer is a node with the old ring (not yet updated), then one
        // with the new ring: either way its value survives, under the current key.
        for writer_ring in [KeyRing::new(key(1)), rotated()] {
            let memory = MemoryStorage::new();
            let old = Encrypted::new(memory.clone(), KeyRing::new(key(1)));
            old.store("acme/account.json", b"older").await.unwrap();
            let scratch = MemoryStorage::new();
            Encrypted::new(scratch.clone(), writer_ring)
                .store("acme/account.json", b"newer")
                .await
                .unwrap();
            let racing = Racing {
                inner: memory.clone(),
                next: Arc::new(Mutex::new(Some((
                    "acme/account.json".to_owned(),
                    scratch.load("acme/account.json").await.unwrap(),
                )))),
            };
            let report = Encrypted::new(racing.clone(), rotated())
                .rekey("", |_| {})
                .await
                .unwrap();
            assert!(
                racing.next.lock().unwrap().is_none(),
                "the concurrent write happened"
            );
            assert_eq!(report.done, 1);
            let after = Encrypted::new(memory.clone(), KeyRing::new(key(2)));
            assert_eq!(after.load("acme/account.json").await.unwrap(), b"newer");
        }
    }

    #[tokio::test]
    async fn a_certificate_record_is_rekeyed_under_its_name_lock() {
        let memory = MemoryStorage::new();
        let old = Encrypted::new(memory.clone(), KeyRing::new(key(1)));
        let bundle = "certificates/local/a.example/a.example.bundle";
        let copy = "certificates/local/a.example/a.example.crt";
        for key in [bundle, copy] {
            old.store(key, b"first").await.unwrap();
        }
        // A node renewing a.example holds its lock.
        let lease = memory
            .try_acquire(
                &cert_core::keys::issue_lock("a.example"),
                Duration::from_secs(30),
            )
            .await
            .unwrap()
            .unwrap();
        let new = Encrypted::new(memory.clone(), rotated());
        let rekey = tokio::spawn(async move { new.rekey("", |_| {}).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !rekey.is_finished(),
            "re-keying waits for the record's lock"
        );
        for key in [bundle, copy] {
            let raw = memory.load(key).await.unwrap();
            assert_eq!(KeyRing::sealed_by(&raw), Some(key_id(1)), "{key}");
        }
        // The renewing node (still on the old ring) saves the new record, then lets go.
        for key in [bundle, copy] {
            old.store_fenced(key, b"renewed", &lease).await.unwrap();
        }
        memory.release(&lease).await.unwrap();
        let report = rekey.await.unwrap().unwrap();
        assert_eq!((report.done, report.resealed), (2, 2));
        let after = Encrypted::new(memory.clone(), KeyRing::new(key(2)));
        for key in [bundle, copy] {
            assert_eq!(after.load(key).await.unwrap(), b"renewed", "{key}");
        }
    }

    fn key_id(n: u8) -> crate::KeyId {
        key(n).id()
    }
}
