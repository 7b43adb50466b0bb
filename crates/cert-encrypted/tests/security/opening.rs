//! What never opens: a single flipped bit, a truncated or extended value, a value moved
//! to another key, a value sealed by another key, and a plain value unless migrating.

use cert_core::{MemoryStorage, Storage};
use cert_encrypted::{Encrypted, KeyRing, OpenError};

use crate::{MARKER, contains, corrupt_key, key, open_error};

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
