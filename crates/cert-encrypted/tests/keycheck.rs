//! Key checks: a node with the wrong key refuses to write, and re-keying authenticates
//! what it leaves alone.

use cert_core::{Error, MemoryStorage, Storage};
use cert_encrypted::{Encrypted, KEYCHECK_PREFIX, KeyCheckError, KeyRing, OpenError, SecretKey};

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

fn check_error(err: &Error) -> &KeyCheckError {
    match err {
        Error::Backend { source, .. } => source
            .downcast_ref::<KeyCheckError>()
            .unwrap_or_else(|| panic!("not a key check error: {err:?}")),
        other => panic!("not a key check error: {other:?}"),
    }
}

/// A node with another key must not write values that no other node could open.
#[tokio::test]
async fn a_wrong_key_cannot_write() {
    let memory = MemoryStorage::new();
    let right = Encrypted::new(memory.clone(), KeyRing::new(key(1)));
    right.store("acme/account.json", b"v1").await.unwrap();

    let wrong = Encrypted::new(memory.clone(), KeyRing::new(key(3)));
    let err = wrong.store("acme/other.json", b"v2").await.unwrap_err();
    match check_error(&err) {
        KeyCheckError::NoKnownKey { stored, configured } => {
            assert_eq!(stored, &vec![key(1).id()]);
            assert_eq!(configured, &vec![key(3).id()]);
        }
        other => panic!("{other:?}"),
    }
    let shown = err.to_string();
    assert!(shown.contains(&key(1).id().to_string()), "{shown}");
    assert!(!shown.contains(&*key(3).to_base64()), "{shown}");
    assert!(!memory.exists("acme/other.json").await.unwrap());
    // Fenced writes are checked too.
    let lease = cert_core::Locker::try_acquire(&memory, "l", std::time::Duration::from_secs(9))
        .await
        .unwrap()
        .unwrap();
    assert!(wrong.store_fenced("x", b"v", &lease).await.is_err());
    assert!(!memory.exists("x").await.unwrap());
    // The right key still writes.
    right.store("acme/other.json", b"v3").await.unwrap();
}

/// A different key given an id already in use cannot open that id's check value.
#[tokio::test]
async fn a_wrong_key_under_a_known_id_cannot_write() {
    let memory = MemoryStorage::new();
    Encrypted::new(memory.clone(), KeyRing::new(key(1)))
        .store("a", b"v")
        .await
        .unwrap();
    let impostor = key(4).with_id(key(1).id());
    let err = Encrypted::new(memory.clone(), KeyRing::new(impostor))
        .store("b", b"v")
        .await
        .unwrap_err();
    assert!(
        matches!(check_error(&err), KeyCheckError::WrongKey { key_id, .. } if *key_id == key(1).id()),
        "{err:?}"
    );
}

/// A storage sealed before check values existed: existing envelopes decide.
#[tokio::test]
async fn a_storage_without_check_values_is_probed() {
    let memory = MemoryStorage::new();
    let old = KeyRing::new(key(1));
    memory
        .store(
            "acme/account.json",
            &old.seal("acme/account.json", b"v").unwrap(),
        )
        .await
        .unwrap();
    memory.store("plain/value", b"not sealed").await.unwrap();

    let err = Encrypted::new(memory.clone(), KeyRing::new(key(2)))
        .store("b", b"v")
        .await
        .unwrap_err();
    assert!(
        matches!(
            check_error(&err),
            KeyCheckError::ExistingValue { key, reason: OpenError::UnknownKeyId { .. } }
                if key == "acme/account.json"
        ),
        "{err:?}"
    );
    Encrypted::new(memory.clone(), KeyRing::new(key(1)))
        .store("b", b"v")
        .await
        .unwrap();
    let check = format!("{KEYCHECK_PREFIX}/{}", key(1).id());
    assert!(memory.exists(&check).await.unwrap());
}

/// A rotation writes the new key's check value and keeps working after the old key is
/// removed.
#[tokio::test]
async fn a_rotation_passes_the_check() {
    let memory = MemoryStorage::new();
    Encrypted::new(memory.clone(), KeyRing::new(key(1)))
        .store("a", b"1")
        .await
        .unwrap();
    let rotating = Encrypted::new(
        memory.clone(),
        KeyRing::new(key(2)).with_previous(key(1)).unwrap(),
    );
    rotating.store("b", b"2").await.unwrap();
    let report = rotating.rekey("", |_| {}).await.unwrap();
    assert_eq!(report.total, 2, "check values are not re-keyed: {report:?}");
    let after = Encrypted::new(memory.clone(), KeyRing::new(key(2)));
    after.store("c", b"3").await.unwrap();
    assert_eq!(after.load("a").await.unwrap(), b"1");
    // The old key's check value is still sealed by the old key.
    let old_check = format!("{KEYCHECK_PREFIX}/{}", key(1).id());
    let raw = memory.load(&old_check).await.unwrap();
    assert_eq!(KeyRing::sealed_by(&raw), Some(key(1).id()));
}

/// Check values do not show in the encrypted view's listings.
#[tokio::test]
async fn check_values_are_hidden_from_listings() {
    let memory = MemoryStorage::new();
    let storage = Encrypted::new(memory.clone(), KeyRing::new(key(1)));
    storage.store("certificates/x", b"v").await.unwrap();
    assert_eq!(storage.list("", false).await.unwrap(), vec!["certificates"]);
    assert_eq!(
        storage.list("", true).await.unwrap(),
        vec!["certificates/x"]
    );
    assert!(
        storage
            .list("cert-encrypted", true)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        storage
            .list("cert-encrypted", false)
            .await
            .unwrap()
            .is_empty()
    );
    // Something else below `cert-encrypted` keeps the directory visible.
    storage.store("cert-encrypted/note", b"v").await.unwrap();
    assert_eq!(
        storage.list("", false).await.unwrap(),
        vec!["cert-encrypted", "certificates"]
    );
    assert_eq!(
        storage.list("cert-encrypted", false).await.unwrap(),
        vec!["cert-encrypted/note"]
    );
    // The inner storage shows them.
    assert!(
        memory
            .list("", true)
            .await
            .unwrap()
            .iter()
            .any(|k| k.starts_with(KEYCHECK_PREFIX))
    );
}

/// The old re-keying counted a value carrying the current key id as done without
/// opening it, then reported that every value opened.
#[tokio::test]
async fn rekey_authenticates_values_under_the_current_id() {
    let memory = MemoryStorage::new();
    let storage = Encrypted::new(memory.clone(), KeyRing::new(key(1)));
    storage.store("good", b"v").await.unwrap();
    // Sealed by another key that claims the current id.
    let forged = KeyRing::new(key(5).with_id(key(1).id()))
        .seal("forged", b"x")
        .unwrap();
    memory.store("forged", &forged).await.unwrap();
    let err = storage.rekey("", |_| {}).await.unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { key, .. } if key == "forged"),
        "{err:?}"
    );
    // A tampered value under the current id is refused the same way.
    let mut tampered = storage.ring().seal("forged", b"x").unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    memory.store("forged", &tampered).await.unwrap();
    assert!(matches!(
        storage.rekey("", |_| {}).await,
        Err(Error::Corrupt { .. })
    ));
    memory.delete("forged").await.unwrap();
    let report = storage.rekey("", |_| {}).await.unwrap();
    assert_eq!((report.total, report.already_current), (1, 1));
}
