//! Key rotation: older keys in the ring still open, and re-keying leaves nothing under
//! the old key, resumes after an interruption, never interleaves with another run, and
//! seals plain values when migrating.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cert_core::{Error, KeyInfo, Lease, Locker, MemoryStorage, Result, Storage};
use cert_encrypted::{Encrypted, KeyRing, OpenError, REKEY_LOCK, RekeyProgress};

use crate::{MARKER, contains, key, open_error};

#[tokio::test]
async fn older_keys_in_the_ring_still_open() {
    let inner = MemoryStorage::new();
    let old = Encrypted::new(inner.clone(), KeyRing::new(key(1)));
    old.store("k/old", b"old value").await.unwrap();
    let ring = KeyRing::new(key(2)).with_previous(key(1)).unwrap();
    let new = Encrypted::new(inner.clone(), ring);
    assert_eq!(new.load("k/old").await.unwrap(), b"old value");
    new.store("k/new", b"new value").await.unwrap();
    assert_eq!(
        KeyRing::sealed_by(&inner.load("k/new").await.unwrap()),
        Some(key(2).id())
    );
    // The old ring cannot read what the new key sealed.
    assert!(matches!(
        open_error(&old.load("k/new").await.unwrap_err()),
        OpenError::UnknownKeyId { .. }
    ));
}

#[tokio::test]
async fn rekey_leaves_nothing_under_the_old_key_and_is_resumable() {
    let inner = MemoryStorage::new();
    let old = Encrypted::new(inner.clone(), KeyRing::new(key(1)));
    for i in 0..20 {
        old.store(&format!("certs/{i:02}"), format!("value {i}").as_bytes())
            .await
            .unwrap();
    }
    old.store("other/x", b"outside the prefix").await.unwrap();
    let ring = KeyRing::new(key(2)).with_previous(key(1)).unwrap();
    let new = Encrypted::new(inner.clone(), ring);
    // Some values were already re-sealed (as if a previous run was interrupted).
    for i in 0..5 {
        new.store(&format!("certs/{i:02}"), format!("value {i}").as_bytes())
            .await
            .unwrap();
    }

    let mut seen = Vec::new();
    let report = new
        .rekey("certs", |p: &RekeyProgress| seen.push((p.done, p.total)))
        .await
        .unwrap();
    assert_eq!(report.total, 20);
    assert_eq!(report.done, 20);
    assert_eq!(report.already_current, 5);
    assert_eq!(report.resealed, 15);
    assert_eq!(seen.first(), Some(&(0, 20)));
    assert_eq!(seen.last(), Some(&(20, 20)));
    assert_eq!(seen.len(), 21);

    for key_name in inner.list("certs", true).await.unwrap() {
        let raw = inner.load(&key_name).await.unwrap();
        assert_eq!(KeyRing::sealed_by(&raw), Some(key(2).id()), "{key_name}");
    }
    // Outside the prefix: untouched.
    assert_eq!(
        KeyRing::sealed_by(&inner.load("other/x").await.unwrap()),
        Some(key(1).id())
    );
    // A ring without the old key reads everything that was re-keyed.
    let only_new = Encrypted::new(inner.clone(), KeyRing::new(key(2)));
    for i in 0..20 {
        assert_eq!(
            only_new.load(&format!("certs/{i:02}")).await.unwrap(),
            format!("value {i}").as_bytes()
        );
    }
    // A second run has nothing left to do.
    let again = new.rekey("certs", |_| {}).await.unwrap();
    assert_eq!((again.resealed, again.already_current), (0, 20));
}

/// A storage that fails loads of one key while told to, to interrupt a re-keying.
#[derive(Debug, Clone)]
struct Flaky {
    inner: MemoryStorage,
    poisoned: Arc<Mutex<Option<String>>>,
}

impl Flaky {
    fn poison(&self, key: Option<&str>) {
        *self.poisoned.lock().unwrap() = key.map(str::to_owned);
    }
}

#[async_trait]
impl Storage for Flaky {
    async fn store(&self, key: &str, value: &[u8]) -> Result<()> {
        self.inner.store(key, value).await
    }
    async fn load(&self, key: &str) -> Result<Vec<u8>> {
        if self.poisoned.lock().unwrap().as_deref() == Some(key) {
            return Err(Error::unavailable("flaky", std::io::Error::other("down")));
        }
        self.inner.load(key).await
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
impl Locker for Flaky {
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
async fn an_interrupted_rekey_resumes_where_it_stopped() {
    let memory = MemoryStorage::new();
    let old = Encrypted::new(memory.clone(), KeyRing::new(key(1)));
    for i in 0..10 {
        old.store(&format!("k/{i}"), b"v").await.unwrap();
    }
    let flaky = Flaky {
        inner: memory.clone(),
        poisoned: Arc::default(),
    };
    flaky.poison(Some("k/6"));
    let ring = KeyRing::new(key(2)).with_previous(key(1)).unwrap();
    let new = Encrypted::new(flaky.clone(), ring);
    let mut last = RekeyProgress::default();
    let err = new.rekey("k", |p| last = *p).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!((last.done, last.resealed), (6, 6));
    // The lock was released despite the failure.
    let probe = memory
        .try_acquire(REKEY_LOCK, Duration::from_secs(5))
        .await
        .unwrap();
    memory
        .release(&probe.expect("re-keying lock left held"))
        .await
        .unwrap();

    flaky.poison(None);
    let report = new.rekey("k", |_| {}).await.unwrap();
    assert_eq!((report.already_current, report.resealed), (6, 4));
}

#[tokio::test]
async fn two_rekeys_never_interleave() {
    let inner = MemoryStorage::new();
    let ring = KeyRing::new(key(2)).with_previous(key(1)).unwrap();
    let storage = Encrypted::new(inner.clone(), ring);
    // Someone else holds the re-keying lock: rekey waits for it.
    let held = inner
        .try_acquire(REKEY_LOCK, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let options = cert_core::LockOptions::default().with_timeout(Duration::from_millis(200));
    let err = storage.rekey_with("", &options, |_| {}).await.unwrap_err();
    assert!(
        matches!(err, Error::LockTimeout { ref name } if name == REKEY_LOCK),
        "{err:?}"
    );
    inner.release(&held).await.unwrap();
    assert!(storage.rekey_with("", &options, |_| {}).await.is_ok());
}

#[tokio::test]
async fn migration_rekey_seals_plain_values() {
    let inner = MemoryStorage::new();
    inner.store("legacy/a", MARKER).await.unwrap();
    inner.store("legacy/b", b"").await.unwrap();
    let strict = Encrypted::new(inner.clone(), KeyRing::new(key(1)));
    // Without migration, a plain value stops the run with a typed error.
    let err = strict.rekey("legacy", |_| {}).await.unwrap_err();
    assert_eq!(open_error(&err), &OpenError::NotAnEnvelope);

    let migrating = strict.clone().with_plaintext_migration(true);
    let report = migrating.rekey("legacy", |_| {}).await.unwrap();
    assert_eq!(report.resealed, 2);
    assert!(!contains(&inner.load("legacy/a").await.unwrap(), MARKER));
    assert_eq!(strict.load("legacy/a").await.unwrap(), MARKER);
    assert_eq!(strict.load("legacy/b").await.unwrap(), b"");
}
