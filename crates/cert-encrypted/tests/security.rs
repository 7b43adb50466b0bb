//! What sealing must guarantee: nothing altered, truncated, moved or sealed by another
//! key ever opens, the inner store never holds plaintext, and re-keying leaves no value
//! under an old key.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cert_core::{Error, KeyInfo, Lease, Locker, MemoryStorage, Result, Storage};
use cert_encrypted::{
    Encrypted, EncryptedLayer, KeyRing, Layer, OpenError, REKEY_LOCK, RekeyProgress, SecretKey,
    overhead,
};

const MARKER: &[u8] = b"-----BEGIN PRIVATE KEY----- MARKER-7f3a9c";

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

fn open_error(err: &Error) -> &OpenError {
    match err {
        Error::Corrupt { source, .. } => source
            .downcast_ref::<OpenError>()
            .unwrap_or_else(|| panic!("source is not an OpenError: {err:?}")),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn corrupt_key(err: &Error) -> &str {
    match err {
        Error::Corrupt { key, .. } => key,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn every_single_bit_flip_fails_to_open() {
    let inner = MemoryStorage::new();
    let storage = Encrypted::new(inner.clone(), KeyRing::new(key(1)));
    storage.store("a/b", b"tiny value").await.unwrap();
    let sealed = inner.load("a/b").await.unwrap();
    for bit in 0..sealed.len() * 8 {
        let mut altered = sealed.clone();
        altered[bit / 8] ^= 1 << (bit % 8);
        inner.store("a/b", &altered).await.unwrap();
        let err = storage.load("a/b").await.unwrap_err();
        assert_eq!(corrupt_key(&err), "a/b", "bit {bit}");
        // Which error depends on the field hit; every one is a typed refusal.
        let why = open_error(&err);
        match bit / 8 {
            0..4 => assert_eq!(why, &OpenError::NotAnEnvelope, "bit {bit}"),
            4 => assert!(
                matches!(why, OpenError::UnsupportedVersion { .. }),
                "bit {bit}: {why:?}"
            ),
            5..13 => assert!(
                matches!(why, OpenError::UnknownKeyId { .. }),
                "bit {bit}: {why:?}"
            ),
            _ => assert!(
                matches!(why, OpenError::Tampered { .. }),
                "bit {bit}: {why:?}"
            ),
        }
    }
    inner.store("a/b", &sealed).await.unwrap();
    assert_eq!(storage.load("a/b").await.unwrap(), b"tiny value");
}

#[tokio::test]
async fn every_truncation_fails_to_open() {
    let inner = MemoryStorage::new();
    let storage = Encrypted::new(inner.clone(), KeyRing::new(key(1)));
    storage.store("k", b"some value").await.unwrap();
    let sealed = inner.load("k").await.unwrap();
    for len in 0..sealed.len() {
        inner.store("k", &sealed[..len]).await.unwrap();
        let err = storage.load("k").await.unwrap_err();
        assert_eq!(corrupt_key(&err), "k");
        let why = open_error(&err);
        let ok = match len {
            0 => why == &OpenError::NotAnEnvelope,
            1..53 => matches!(why, OpenError::Truncated { len: l, min: 53 } if *l == len),
            _ => matches!(why, OpenError::Tampered { .. }),
        };
        assert!(ok, "length {len}: {why:?}");
    }
    // Extending fails too.
    let mut longer = sealed.clone();
    longer.push(0);
    inner.store("k", &longer).await.unwrap();
    assert!(matches!(
        open_error(&storage.load("k").await.unwrap_err()),
        OpenError::Tampered { .. }
    ));
}

#[tokio::test]
async fn a_value_moved_to_another_key_fails() {
    let inner = MemoryStorage::new();
    let storage = Encrypted::new(inner.clone(), KeyRing::new(key(1)));
    storage.store("certs/a.key", b"secret a").await.unwrap();
    storage.store("certs/b.key", b"secret b").await.unwrap();
    let a = inner.load("certs/a.key").await.unwrap();
    inner.store("certs/b.key", &a).await.unwrap();
    inner.store("elsewhere/c", &a).await.unwrap();
    for target in ["certs/b.key", "elsewhere/c"] {
        let err = storage.load(target).await.unwrap_err();
        assert_eq!(corrupt_key(&err), target);
        assert_eq!(
            open_error(&err),
            &OpenError::KeyMismatch {
                key_id: key(1).id(),
                sealed_for: Some("certs/a.key".into())
            }
        );
        assert!(err.to_string().contains(target), "{err}");
    }
    assert_eq!(storage.load("certs/a.key").await.unwrap(), b"secret a");
}

#[tokio::test]
async fn a_wrong_key_fails_and_names_the_key_id() {
    let inner = MemoryStorage::new();
    let right = Encrypted::new(inner.clone(), KeyRing::new(key(1)));
    right.store("k", b"v").await.unwrap();

    // A different key: unknown id.
    let other = Encrypted::new(inner.clone(), KeyRing::new(key(2)));
    let err = other.load("k").await.unwrap_err();
    assert_eq!(
        open_error(&err),
        &OpenError::UnknownKeyId {
            key_id: key(1).id()
        }
    );
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains(&key(1).id().to_string()), "{source}");

    // A different key configured under the same id: authentication fails.
    let impostor = Encrypted::new(inner, KeyRing::new(key(2).with_id(key(1).id())));
    assert_eq!(
        open_error(&impostor.load("k").await.unwrap_err()),
        &OpenError::Tampered {
            key_id: key(1).id()
        }
    );
}

#[tokio::test]
async fn plain_values_are_not_envelopes_unless_migrating() {
    let inner = MemoryStorage::new();
    inner.store("plain", b"{\"json\":true}").await.unwrap();
    let strict = Encrypted::new(inner.clone(), KeyRing::new(key(1)));
    let err = strict.load("plain").await.unwrap_err();
    assert_eq!(open_error(&err), &OpenError::NotAnEnvelope);
    assert_eq!(corrupt_key(&err), "plain");
    // The message says how to fix it, in the library's terms (no command-line flags).
    let text = err.to_string();
    assert!(text.contains("not sealed"), "{text}");
    assert!(text.contains("with_plaintext_migration(true)"), "{text}");
    assert!(text.contains("Encrypted::rekey"), "{text}");
    assert!(!text.contains("--"), "{text}");

    let migrating = strict.clone().with_plaintext_migration(true);
    assert_eq!(migrating.load("plain").await.unwrap(), b"{\"json\":true}");
    assert_eq!(migrating.stat("plain").await.unwrap().size, 13);
    // New values are sealed even while migrating.
    migrating.store("new", MARKER).await.unwrap();
    assert!(!contains(&inner.load("new").await.unwrap(), MARKER));
}

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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_inner_store_never_holds_the_plaintext() {
    let inner = MemoryStorage::new();
    let storage = EncryptedLayer::new(KeyRing::new(key(1))).layer(inner.clone());
    let mut big = MARKER.repeat(100);
    big.extend_from_slice(MARKER);
    storage.store("a/small", MARKER).await.unwrap();
    storage.store("a/big", &big).await.unwrap();
    storage.store("a/small", MARKER).await.unwrap();
    for key_name in inner.list("", true).await.unwrap() {
        let raw = inner.load(&key_name).await.unwrap();
        assert!(!contains(&raw, MARKER), "{key_name} holds the plaintext");
        assert!(
            !contains(&raw, &MARKER[..16]),
            "{key_name} holds a fragment"
        );
    }
    assert_eq!(storage.load("a/big").await.unwrap(), big);
}

#[tokio::test]
async fn stat_reports_the_plaintext_size() {
    let inner = MemoryStorage::new();
    let storage = Encrypted::new(inner.clone(), KeyRing::new(key(1)));
    storage.store("dir/k", &[5; 1000]).await.unwrap();
    let info = storage.stat("dir/k").await.unwrap();
    assert!(info.is_terminal);
    assert_eq!(info.size, 1000);
    assert_eq!(
        inner.stat("dir/k").await.unwrap().size,
        1000 + overhead("dir/k") as u64
    );
    let prefix = storage.stat("dir").await.unwrap();
    assert!(!prefix.is_terminal);
    assert_eq!(prefix.size, 0);
    assert!(storage.stat("nope").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn too_large_counts_the_overhead_and_names_the_key() {
    let storage = Encrypted::new(MemoryStorage::new(), KeyRing::new(key(1)));
    let limit = cert_core::MAX_VALUE_LEN - overhead("big/value");
    storage.store("big/value", &vec![1; limit]).await.unwrap();
    match storage.store("big/value", &vec![1; limit + 1]).await {
        Err(Error::TooLarge {
            key,
            size,
            limit: l,
        }) => {
            assert_eq!(key, "big/value");
            assert_eq!(size, limit + 1);
            assert_eq!(l, limit);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(storage.load("big/value").await.unwrap().len(), limit);
}

#[tokio::test]
async fn debug_of_keys_rings_and_storages_shows_no_key_bytes() {
    let raw = [0x5Au8; 32];
    let key = SecretKey::from_bytes(raw);
    let b64 = key.to_base64();
    let ring = KeyRing::new(key.clone())
        .with_previous(SecretKey::from_bytes([0x3C; 32]))
        .unwrap();
    let storage = Encrypted::new(MemoryStorage::new(), ring.clone());
    let layer = EncryptedLayer::new(ring.clone());
    for shown in [
        format!("{key:?}"),
        format!("{key:#?}"),
        format!("{ring:?}"),
        format!("{ring:#?}"),
        format!("{storage:?}"),
        format!("{layer:?}"),
    ] {
        assert!(shown.contains(&key.id().to_string()), "{shown}");
        assert!(!shown.contains("90, 90"), "{shown}"); // 0x5A in decimal
        assert!(!shown.contains("60, 60"), "{shown}"); // 0x3C in decimal
        assert!(!shown.contains("5a5a5a"), "{shown}");
        assert!(!shown.contains(b64.as_str()), "{shown}");
    }
}
