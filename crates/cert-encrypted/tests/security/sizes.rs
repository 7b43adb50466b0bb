//! Sizes: `stat` reports the plaintext size, and the size limit counts the sealing
//! overhead and names the key.

use cert_core::{Error, MemoryStorage, Storage};
use cert_encrypted::{Encrypted, KeyRing, overhead};

use crate::key;

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
