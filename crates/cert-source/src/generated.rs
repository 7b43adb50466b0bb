//! [`GeneratedStore`]: certificates minted on the fly (an intercepting proxy's local CA
//! signing a leaf per host), generated once per host however many requests want one at
//! the same time, and, with a shared storage, once per host across a fleet.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use cert_core::rustls::sign::CertifiedKey;
use cert_core::{Cache, LockOptions, Locker, StorageExt, Store, keys, lock};
use zeroize::Zeroizing;

use crate::GenerateError;
use crate::bundle::{PemBundle, normalize_name, validate_pem};

/// The default top-level storage prefix of generated certificates.
pub const GENERATED: &str = "generated";

/// A bounded cache of generated certificates that runs one generation per host at a time.
///
/// [`fetch`](Self::fetch) answers from memory; on a miss exactly one caller's generator
/// runs for that host while the others wait for its result. A failed generation is not
/// remembered: the next caller tries again. With [`with_storage`](Self::with_storage) the
/// bundle is also kept in a shared storage and generated under the host's cluster lock,
/// so every store over that storage serves the same certificate.
///
/// A certificate past its end of validity is never handed out: the next `fetch` for its
/// host generates (or loads) a fresh one. Otherwise entries stay until evicted for room or
/// [`remove`](Self::remove)d.
pub struct GeneratedStore {
    cache: Cache,
    /// The end of validity of each host held, pruned when it outgrows the cache.
    expiry: parking_lot::Mutex<HashMap<String, SystemTime>>,
    storage: Option<Arc<dyn Store>>,
    lock: LockOptions,
    prefix: String,
    generations: AtomicU64,
}

impl fmt::Debug for GeneratedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedStore")
            .field("cache", &self.cache)
            .field("storage", &self.storage.as_ref().map(|_| "shared"))
            .field("prefix", &self.prefix)
            .field("generations", &self.generations())
            .finish()
    }
}

impl GeneratedStore {
    /// A store holding at most `capacity` hosts in memory (at least 1), with no storage.
    pub fn new(capacity: usize) -> Self {
        GeneratedStore {
            cache: Cache::new(capacity),
            expiry: parking_lot::Mutex::new(HashMap::new()),
            storage: None,
            lock: LockOptions::default(),
            prefix: GENERATED.to_owned(),
            generations: AtomicU64::new(0),
        }
    }

    /// Also keeps every bundle in `storage` (under `generated/<host>/<host>.pem`), checked
    /// before generating, and generates under the host's cluster lock.
    pub fn with_storage(mut self, storage: Arc<dyn Store>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Takes the per-host cluster locks with these options.
    pub fn with_lock_options(mut self, options: LockOptions) -> Self {
        self.lock = options;
        self
    }

    /// Keeps bundles under `prefix` instead of `generated`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Result<Self, cert_core::Error> {
        let prefix = prefix.into();
        cert_core::validate_prefix(&prefix)?;
        self.prefix = prefix;
        Ok(self)
    }

    /// The most hosts held in memory.
    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// How many hosts are held in memory.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether no host is held in memory.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// How many times this store has run a generator.
    pub fn generations(&self) -> u64 {
        self.generations.load(Ordering::Relaxed)
    }

    /// The certificate held in memory for `host`, if any and still valid (no generation,
    /// no I/O).
    pub fn get(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let host = normalize_name(host)?;
        self.cache.get_exact(&host).filter(|_| !self.expired(&host))
    }

    /// Forgets `host` in memory (the stored copy stays) and returns what was held.
    pub fn remove(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        if let Some(host) = normalize_name(host) {
            self.expiry.lock().remove(&host);
        }
        self.cache.remove(host)
    }

    /// Whether the certificate held for `host` (normalized) has run out.
    fn expired(&self, host: &str) -> bool {
        self.expiry
            .lock()
            .get(host)
            .is_some_and(|not_after| *not_after <= SystemTime::now())
    }

    /// Records the end of validity of the certificate now held for `host`.
    fn held_until(&self, host: &str, not_after: SystemTime) {
        let mut expiry = self.expiry.lock();
        expiry.insert(host.to_owned(), not_after);
        // Hosts evicted from the cache leave entries behind: drop them now and then.
        if expiry.len() > 2 * self.cache.capacity() {
            expiry.retain(|host, _| self.cache.get_exact(host).is_some());
        }
    }

    /// The storage key of the bundle for `host`.
    pub fn storage_key(&self, host: &str) -> String {
        let safe = keys::safe_name(host);
        format!("{}/{safe}/{safe}.pem", self.prefix)
    }

    /// The lock name taken while generating for `host`.
    pub fn lock_name(&self, host: &str) -> String {
        format!("{}/{}", self.prefix, keys::safe_name(host))
    }

    /// The certificate for `host`: from memory, else from storage, else from `generate`,
    /// which runs at most once per host at a time (per store, and with storage, across
    /// every store sharing it).
    pub async fn fetch<F, Fut, E>(
        &self,
        host: &str,
        generate: F,
    ) -> Result<Arc<CertifiedKey>, GenerateError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<PemBundle, E>>,
    {
        let host = normalize_name(host).ok_or_else(|| GenerateError::InvalidHost(host.into()))?;
        if let Some(cert) = self.cache.get_exact(&host) {
            if !self.expired(&host) {
                return Ok(cert);
            }
            self.cache.remove(&host);
        }
        self.cache
            .get_or_try_insert_with(&host, || async {
                let (cert, not_after) = self.load_or_generate(&host, generate).await?;
                self.held_until(&host, not_after);
                Ok(cert)
            })
            .await
    }

    async fn load_or_generate<F, Fut, E>(
        &self,
        host: &str,
        generate: F,
    ) -> Result<(Arc<CertifiedKey>, SystemTime), GenerateError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<PemBundle, E>>,
    {
        let Some(storage) = &self.storage else {
            return self
                .generate(generate)
                .await
                .map(|(cert, not_after, _)| (cert, not_after));
        };
        let key = self.storage_key(host);
        if let Some(cert) = self.load(storage.as_ref(), &key, host).await? {
            return Ok(cert);
        }
        let locker: Arc<dyn Locker> = Arc::clone(storage) as Arc<dyn Locker>;
        let guard = lock(locker, &self.lock_name(host), &self.lock).await?;
        // Another store may have generated it while this one waited.
        let result = match self.load(storage.as_ref(), &key, host).await {
            Ok(Some(cert)) => Ok(cert),
            Ok(None) => match self.generate(generate).await {
                Ok((cert, not_after, combined)) => storage
                    .store(&key, combined.as_bytes())
                    .await
                    .map(|()| (cert, not_after))
                    .map_err(GenerateError::from),
                Err(err) => Err(err),
            },
            Err(err) => Err(err),
        };
        if let Err(err) = guard.release().await {
            tracing::warn!(host, error = %err, "releasing the generation lock failed");
        }
        result
    }

    async fn generate<F, Fut, E>(
        &self,
        generate: F,
    ) -> Result<(Arc<CertifiedKey>, SystemTime, Zeroizing<String>), GenerateError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<PemBundle, E>>,
    {
        self.generations.fetch_add(1, Ordering::Relaxed);
        let bundle = generate().await.map_err(GenerateError::Generate)?;
        let validated = bundle.validate()?;
        Ok((
            validated.certified,
            validated.not_after,
            bundle.to_combined(),
        ))
    }

    /// The stored bundle for `host`, when there is one that is usable: it parses, covers
    /// `host` and has not expired. Anything else is generated anew.
    async fn load<E>(
        &self,
        storage: &dyn Store,
        key: &str,
        host: &str,
    ) -> Result<Option<(Arc<CertifiedKey>, SystemTime)>, GenerateError<E>> {
        let Some(bytes) = storage.load_opt(key).await? else {
            return Ok(None);
        };
        let bytes = Zeroizing::new(bytes);
        let Ok(text) = std::str::from_utf8(&bytes) else {
            tracing::warn!(
                key,
                "stored generated certificate is not PEM; generating anew"
            );
            return Ok(None);
        };
        match validate_pem(text, text) {
            Ok(valid) if valid.covers(host) && valid.not_after > SystemTime::now() => {
                Ok(Some((valid.certified, valid.not_after)))
            }
            Ok(_) => Ok(None),
            Err(err) => {
                tracing::warn!(key, error = %err, "stored generated certificate unusable; generating anew");
                Ok(None)
            }
        }
    }
}
