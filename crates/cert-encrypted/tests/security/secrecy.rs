//! Secrets never shown: the inner store never holds the plaintext, and `Debug` output of
//! keys, rings and storages holds no key bytes.

use cert_core::{MemoryStorage, Storage};
use cert_encrypted::{Encrypted, EncryptedLayer, KeyRing, Layer, SecretKey};

use crate::{MARKER, contains, key};

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
