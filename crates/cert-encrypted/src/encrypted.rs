//! [`Encrypted`]: the wrapper, and [`EncryptedLayer`] to build it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use cert_core::{Error, KeyInfo, Layer, Lease, Locker, Result, Storage, validate_key};

use crate::envelope::{Envelope, looks_sealed};
use crate::keycheck::{KEYCHECK_PREFIX, is_reserved};
use crate::ring::KeyRing;

/// A storage that seals every value with NaCl secretbox before handing it to `S`, and
/// opens it on the way back.
///
/// Keys, listings, `exists`, `delete` and locks pass through unchanged (keys are not
/// secret); only values are sealed. See the [crate docs](crate) for the envelope format.
///
/// - [`load`](Storage::load) of a value that does not open fails with
///   [`Error::Corrupt`] naming the storage key, whose `source` is an
///   [`OpenError`](crate::OpenError).
/// - [`store`](Storage::store) refuses a value whose envelope would exceed
///   [`MAX_VALUE_LEN`](cert_core::MAX_VALUE_LEN) with [`Error::TooLarge`] naming the key
///   (see [`KeyRing::seal`] for what `limit` reports). The largest value accepted under a
///   key is `MAX_VALUE_LEN - overhead(key)`, a little under the limit of plain backends.
/// - [`stat`](Storage::stat) reports the size of the *plaintext* value. The envelope
///   adds a fixed overhead for a given storage key
///   ([`overhead`](crate::overhead): 55 bytes plus the key's length), so the size is the
///   stored size less that overhead, computed without loading or decrypting anything.
///   In plaintext migration mode `stat` loads the value to tell plain values (reported
///   as stored) from envelopes.
/// - The first write checks the ring against the storage
///   ([`verify_keys`](Encrypted::verify_keys)): a ring that cannot open what the storage
///   was sealed with is refused, and the current key leaves a check value under
///   [`KEYCHECK_PREFIX`](crate::KEYCHECK_PREFIX), which listings hide.
///
/// Clones share the inner storage, the key ring and the result of the key check.
pub struct Encrypted<S> {
    inner: Arc<S>,
    ring: Arc<KeyRing>,
    migration: bool,
    /// Whether [`verify_keys`](Encrypted::verify_keys) passed.
    checked: Arc<AtomicBool>,
}

impl<S> Clone for Encrypted<S> {
    fn clone(&self) -> Self {
        Encrypted {
            inner: Arc::clone(&self.inner),
            ring: Arc::clone(&self.ring),
            migration: self.migration,
            checked: Arc::clone(&self.checked),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Encrypted<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encrypted")
            .field("inner", &self.inner)
            .field("ring", &self.ring)
            .field("plaintext_migration", &self.migration)
            .finish()
    }
}

impl<S> Encrypted<S> {
    /// Wraps `inner`, sealing with `ring`'s current key.
    pub fn new(inner: S, ring: KeyRing) -> Self {
        Self::from_arc(Arc::new(inner), Arc::new(ring))
    }

    /// Wraps a shared `inner` with a shared ring.
    pub fn from_arc(inner: Arc<S>, ring: Arc<KeyRing>) -> Self {
        Encrypted {
            inner,
            ring,
            migration: false,
            checked: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Turns the plaintext migration mode on or off (off by default).
    ///
    /// When on, a stored value that is not an envelope (it does not start with the
    /// magic bytes) is returned as it is by `load` instead of failing with
    /// [`OpenError::NotAnEnvelope`](crate::OpenError::NotAnEnvelope), and
    /// [`rekey`](Encrypted::rekey) seals it. New values are always sealed, so a plain
    /// value is also sealed the next time it is stored. Turn it on only while moving an
    /// existing plain store to encryption: while it is on, anyone who can write to the
    /// inner storage can plant plain values that will be believed.
    ///
    /// ```
    /// use cert_core::{MemoryStorage, Storage};
    /// use cert_encrypted::{Encrypted, KeyRing, SecretKey};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let plain = MemoryStorage::new();
    /// plain.store("acme/account.json", b"{}").await?; // written without encryption
    ///
    /// let storage = Encrypted::new(plain.clone(), KeyRing::new(SecretKey::generate()?));
    /// assert!(storage.load("acme/account.json").await.is_err()); // not sealed
    ///
    /// let migrating = storage.clone().with_plaintext_migration(true);
    /// assert_eq!(migrating.load("acme/account.json").await?, b"{}");
    /// migrating.rekey("", |_| {}).await?; // seals every plain value
    /// assert_eq!(storage.load("acme/account.json").await?, b"{}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_plaintext_migration(mut self, on: bool) -> Self {
        self.migration = on;
        self
    }

    /// Whether the plaintext migration mode is on.
    pub fn plaintext_migration(&self) -> bool {
        self.migration
    }

    /// The wrapped storage (which holds envelopes).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped storage, shared.
    pub fn inner_arc(&self) -> &Arc<S> {
        &self.inner
    }

    /// The key ring.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    pub(crate) fn checked_flag(&self) -> &AtomicBool {
        &self.checked
    }

    /// Opens the stored bytes `raw` of `key` (or passes a plain value through in migration
    /// mode).
    pub(crate) fn open(&self, key: &str, raw: Vec<u8>) -> Result<Vec<u8>> {
        if self.migration && !looks_sealed(&raw) {
            return Ok(raw);
        }
        self.ring
            .open(key, &raw)
            .map_err(|err| Error::corrupt(key, err))
    }

    /// The plaintext size of the stored bytes `raw` of `key`.
    fn plain_size(&self, key: &str, raw: &[u8]) -> u64 {
        match Envelope::parse(raw) {
            Ok(envelope) => envelope.value_len(key).unwrap_or(0) as u64,
            Err(_) => raw.len() as u64,
        }
    }
}

#[async_trait]
impl<S: Storage> Storage for Encrypted<S> {
    async fn store(&self, key: &str, value: &[u8]) -> Result<()> {
        let sealed = self.ring.seal(key, value)?;
        self.verify_keys().await?;
        self.inner.store(key, &sealed).await
    }

    async fn load(&self, key: &str) -> Result<Vec<u8>> {
        let raw = self.inner.load(key).await?;
        self.open(key, raw)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key).await
    }

    /// Lists as the inner storage does, without the key check values (nor their
    /// directory when nothing else is in it).
    async fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        let mut keys = self.inner.list(prefix, recursive).await?;
        keys.retain(|key| !is_reserved(key));
        // A non-recursive listing shows `cert-encrypted` as a directory even when only
        // check values are below it.
        let ancestor = keys.iter().position(|key| {
            KEYCHECK_PREFIX
                .strip_prefix(key.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        });
        if let Some(at) = ancestor {
            let below = self.inner.list(&keys[at], true).await?;
            if below.iter().all(|key| is_reserved(key)) {
                keys.remove(at);
            }
        }
        Ok(keys)
    }

    async fn stat(&self, key: &str) -> Result<KeyInfo> {
        validate_key(key)?;
        let mut info = self.inner.stat(key).await?;
        if info.is_terminal {
            if self.migration {
                match self.inner.load(key).await {
                    Ok(raw) => info.size = self.plain_size(key, &raw),
                    // Deleted or replaced by a prefix since: answer from what stat saw.
                    Err(Error::NotFound { .. }) => {
                        info.size = info.size.saturating_sub(crate::overhead(key) as u64);
                    }
                    Err(err) => return Err(err),
                }
            } else {
                info.size = info.size.saturating_sub(crate::overhead(key) as u64);
            }
        }
        Ok(info)
    }

    /// Seals the value and hands it to the inner storage's fenced store, so the inner
    /// backend's fence (a script, a transaction, a guard) covers the sealed write.
    async fn store_fenced(&self, key: &str, value: &[u8], lease: &Lease) -> Result<()> {
        let sealed = self.ring.seal(key, value)?;
        self.verify_keys().await?;
        self.inner.store_fenced(key, &sealed, lease).await
    }

    async fn delete_fenced(&self, key: &str, lease: &Lease) -> Result<()> {
        self.inner.delete_fenced(key, lease).await
    }
}

#[async_trait]
impl<S: Locker> Locker for Encrypted<S> {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        self.inner.try_acquire(name, ttl).await
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        self.inner.refresh(lease, ttl).await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.inner.release(lease).await
    }

    async fn clean_expired_locks(&self) -> Result<usize> {
        self.inner.clean_expired_locks().await
    }

    fn lock_admin(&self) -> Option<&dyn cert_core::LockAdmin> {
        self.inner.lock_admin()
    }
}

/// Builds [`Encrypted`] storages that share one key ring.
#[derive(Debug, Clone)]
pub struct EncryptedLayer {
    ring: Arc<KeyRing>,
    migration: bool,
}

impl EncryptedLayer {
    /// A layer sealing with `ring`.
    pub fn new(ring: KeyRing) -> Self {
        EncryptedLayer {
            ring: Arc::new(ring),
            migration: false,
        }
    }

    /// Storages built by this layer use the plaintext migration mode
    /// ([`Encrypted::with_plaintext_migration`]).
    pub fn with_plaintext_migration(mut self, on: bool) -> Self {
        self.migration = on;
        self
    }
}

impl<S> Layer<S> for EncryptedLayer {
    type Wrapped = Encrypted<S>;

    fn layer(&self, inner: S) -> Encrypted<S> {
        Encrypted::from_arc(Arc::new(inner), Arc::clone(&self.ring))
            .with_plaintext_migration(self.migration)
    }
}
