//! Cases about the key rules: invalid keys, and a key that is both a value and a prefix.

use std::sync::Arc;
use std::time::Duration;

use cert_core::{Error, LockOptions, Locker, MAX_KEY_LEN, MAX_SEGMENT_LEN, lock};

use crate::Fixture;
use crate::support::{assert_value, everything, invalid_key, not_found, ok};

/// Keys that every backend must refuse: one per rule of
/// [`validate_key`](cert_core::validate_key).
pub fn invalid_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "",
        "/",
        "/a",
        "a/",
        "/a/",
        "a//b",
        ".",
        "..",
        "./a",
        "a/.",
        "a/./b",
        "a/../b",
        "../../etc/passwd",
        "a\0b",
        "\0",
        "a\nb",
        "a\rb",
        "a\tb",
        "a\u{7}b",
        "a\u{1b}[31m",
        "a\u{7f}",
        "a\u{85}b",
        "a\\b",
        "..\\..\\windows",
        ".certstore",
        ".certstore-locks/x",
        "a/.certstore-tmp",
        "a/.certstore/b",
    ]
    .iter()
    .map(|k| (*k).to_owned())
    .collect();
    // Too long as a whole, with every segment short enough.
    let mut long = String::new();
    while long.len() <= MAX_KEY_LEN {
        if !long.is_empty() {
            long.push('/');
        }
        long.push_str(&"k".repeat(99));
    }
    keys.push(long);
    // One segment too long.
    keys.push(format!("a/{}", "s".repeat(MAX_SEGMENT_LEN + 1)));
    keys
}

/// Every invalid key is refused with [`Error::InvalidKey`] by every operation (store,
/// load, delete, exists, stat, list as a prefix, lock names), and nothing is written.
pub async fn invalid_keys_rejected(fixture: &Fixture) {
    let s = fixture.store().await;
    let locker: Arc<dyn Locker> = Arc::clone(&s) as Arc<dyn Locker>;
    ok(s.store("sentinel/key", b"v").await, "store sentinel");
    let before = everything(&*s).await;
    let ttl = fixture.capabilities().ttl(Duration::from_secs(5));
    for key in invalid_keys() {
        let key = key.as_str();
        invalid_key(s.store(key, b"x").await, key, "store");
        invalid_key(s.store(key, b"").await, key, "store of an empty value");
        invalid_key(s.load(key).await, key, "load");
        invalid_key(s.delete(key).await, key, "delete");
        invalid_key(s.exists(key).await, key, "exists");
        invalid_key(s.stat(key).await, key, "stat");
        if !key.is_empty() {
            invalid_key(s.list(key, false).await, key, "list");
            invalid_key(s.list(key, true).await, key, "recursive list");
        }
        invalid_key(s.try_acquire(key, ttl).await, key, "try_acquire");
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            lock(
                Arc::clone(&locker),
                key,
                &LockOptions::default().with_ttl(ttl),
            ),
        )
        .await;
        match waited {
            Ok(result) => invalid_key(result, key, "lock()"),
            Err(_) => panic!("lock() with invalid name {key:?} kept waiting instead of failing"),
        }
    }
    assert_eq!(
        everything(&*s).await,
        before,
        "refused keys must not change what is stored"
    );
    assert_value(s.load("sentinel/key").await, "sentinel/key", b"v");
}

/// A key that is a prefix of others cannot silently lose data: the backend either refuses
/// the second write with [`Error::Conflict`] or keeps both the value and the keys below it.
pub async fn value_and_prefix_at_same_key(fixture: &Fixture) {
    let s = fixture.store().await;
    // A value where keys already exist below.
    ok(s.store("vp/a/b", b"below").await, "store vp/a/b");
    match s.store("vp/a", b"above").await {
        Ok(()) => {
            assert_value(s.load("vp/a").await, "vp/a", b"above");
            assert_value(s.load("vp/a/b").await, "vp/a/b", b"below");
            assert_eq!(
                ok(s.list("vp/a", true).await, "list vp/a"),
                vec!["vp/a/b".to_owned()]
            );
        }
        Err(Error::Conflict { .. }) => {
            assert_value(s.load("vp/a/b").await, "vp/a/b", b"below");
            not_found(s.load("vp/a").await, "load of a refused value");
        }
        Err(other) => panic!("store over a prefix: expected Ok or Conflict, got {other:?}"),
    }
    // Keys below an existing value.
    ok(s.store("vp/c", b"value").await, "store vp/c");
    match s.store("vp/c/d", b"child").await {
        Ok(()) => {
            assert_value(s.load("vp/c").await, "vp/c", b"value");
            assert_value(s.load("vp/c/d").await, "vp/c/d", b"child");
        }
        Err(Error::Conflict { .. }) => {
            assert_value(s.load("vp/c").await, "vp/c", b"value");
            not_found(s.load("vp/c/d").await, "load of a refused child");
        }
        Err(other) => panic!("store below a value: expected Ok or Conflict, got {other:?}"),
    }
    match s.store("vp/c/d/e/f", b"grandchild").await {
        Ok(()) | Err(Error::Conflict { .. }) => {
            assert_value(s.load("vp/c").await, "vp/c", b"value");
        }
        Err(other) => panic!("store deep below a value: expected Ok or Conflict, got {other:?}"),
    }
    let children = ok(s.list("vp", false).await, "list vp");
    assert_eq!(
        children,
        vec!["vp/a".to_owned(), "vp/c".to_owned()],
        "each child listed once"
    );
    assert!(ok(s.exists("vp/a").await, "exists vp/a"));
    assert!(ok(s.exists("vp/c").await, "exists vp/c"));
    // Deleting removes the value and everything below, whichever way the backend went.
    ok(s.delete("vp/a").await, "delete vp/a");
    ok(s.delete("vp/c").await, "delete vp/c");
    assert!(everything(&*s).await.is_empty(), "delete left keys behind");
}
