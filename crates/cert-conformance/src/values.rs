//! Cases about single values: storing, loading, overwriting, sizes, `exists` and `stat`.

use cert_core::{Error, MAX_VALUE_LEN};

use crate::Fixture;
use crate::support::{assert_recent, assert_value, everything, not_found, ok};

/// A stored value loads back byte for byte, exists, and is described by `stat`.
pub async fn round_trip(fixture: &Fixture) {
    let s = fixture.store().await;
    let key = "round/trip/example.com.crt";
    let value = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    ok(s.store(key, value).await, "store");
    assert_value(s.load(key).await, key, value);
    assert!(ok(s.exists(key).await, "exists"), "a stored key must exist");
    let info = ok(s.stat(key).await, "stat");
    assert_eq!(info.size, value.len() as u64, "stat size");
    assert!(info.is_terminal, "a key holding a value is terminal");
    assert_eq!(everything(&*s).await, vec![key.to_owned()]);
}

/// Storing again replaces the value entirely, whether the new one is longer or shorter.
pub async fn overwrite(fixture: &Fixture) {
    let s = fixture.store().await;
    let key = "over/write";
    ok(s.store(key, b"first").await, "store first");
    ok(
        s.store(key, b"a much longer second value").await,
        "store second",
    );
    assert_value(s.load(key).await, key, b"a much longer second value");
    ok(s.store(key, b"3rd").await, "store third");
    assert_value(s.load(key).await, key, b"3rd");
    assert_eq!(
        ok(s.stat(key).await, "stat").size,
        3,
        "stat size after shrink"
    );
    assert_eq!(
        everything(&*s).await,
        vec![key.to_owned()],
        "an overwrite must not leave extra keys"
    );
}

/// An empty value is a value: it loads as empty, exists, is listed and has size 0.
pub async fn empty_value(fixture: &Fixture) {
    let s = fixture.store().await;
    let key = "empty/value";
    ok(s.store(key, b"").await, "store empty");
    assert_value(s.load(key).await, key, b"");
    assert!(ok(s.exists(key).await, "exists"), "an empty value exists");
    let info = ok(s.stat(key).await, "stat");
    assert_eq!(info.size, 0);
    assert!(info.is_terminal);
    assert_eq!(
        ok(s.list("empty", false).await, "list"),
        vec![key.to_owned()]
    );
    ok(s.store(key, b"x").await, "overwrite empty");
    ok(s.store(key, b"").await, "overwrite with empty");
    assert_value(s.load(key).await, key, b"");
}

/// A multi-MiB value ([`Capabilities::large_value`](crate::Capabilities::large_value))
/// round-trips intact.
pub async fn large_value(fixture: &Fixture) {
    let size = fixture.capabilities().large_value;
    if size == 0 {
        eprintln!("SKIPPED large_value: capabilities.large_value is 0");
        return;
    }
    let s = fixture.store().await;
    let key = "large/value";
    let value: Vec<u8> = (0..size)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8)
        .collect();
    ok(s.store(key, &value).await, "store large value");
    assert_value(s.load(key).await, key, &value);
    assert_eq!(ok(s.stat(key).await, "stat").size, size as u64);
    let smaller = &value[..size / 2];
    ok(s.store(key, smaller).await, "overwrite with half");
    assert_value(s.load(key).await, key, smaller);
}

/// Every byte value 0..=255 survives, in any order (no text encoding on the way).
pub async fn all_byte_values(fixture: &Fixture) {
    let s = fixture.store().await;
    let key = "bytes/all";
    let mut value: Vec<u8> = (0..=255u8).collect();
    value.extend((0..=255u8).rev());
    value.extend_from_slice(b"\0\0\r\n\r\n\xff\xfe\xef\xbb\xbf%s%n\\'\"");
    ok(s.store(key, &value).await, "store");
    assert_value(s.load(key).await, key, &value);
    for byte in [0u8, b'\n', 0x80, 0xff] {
        let one = format!("bytes/one-{byte}");
        ok(s.store(&one, &[byte]).await, "store one byte");
        assert_value(s.load(&one).await, &one, &[byte]);
    }
}

/// A value over [`MAX_VALUE_LEN`] is refused with [`Error::TooLarge`] and nothing is
/// written: not a new key, and not over an existing value.
pub async fn too_large_value_refused(fixture: &Fixture) {
    let s = fixture.store().await;
    ok(s.store("big/sentinel", b"keep").await, "store sentinel");
    let before = everything(&*s).await;
    let value = vec![7u8; MAX_VALUE_LEN + 1];
    for key in ["big/new", "big/sentinel"] {
        match s.store(key, &value).await {
            Err(Error::TooLarge { size, limit, .. }) => {
                assert_eq!(size, MAX_VALUE_LEN + 1, "TooLarge size");
                assert_eq!(limit, MAX_VALUE_LEN, "TooLarge limit");
            }
            other => panic!(
                "store of {} bytes at {key}: expected TooLarge, got {other:?}",
                value.len()
            ),
        }
    }
    assert!(
        !ok(s.exists("big/new").await, "exists"),
        "a refused value must not be written"
    );
    assert_value(s.load("big/sentinel").await, "big/sentinel", b"keep");
    assert_eq!(
        everything(&*s).await,
        before,
        "a refused value changed the listing"
    );
    let limit = vec![8u8; MAX_VALUE_LEN];
    if fixture.capabilities().large_value >= MAX_VALUE_LEN {
        ok(
            s.store("big/limit", &limit).await,
            "store exactly MAX_VALUE_LEN bytes",
        );
        assert_eq!(
            ok(s.stat("big/limit").await, "stat").size,
            MAX_VALUE_LEN as u64
        );
    }
}

/// `load`, `stat` and `delete` of a missing key are [`Error::NotFound`]; `exists` is false;
/// a prefix is not a value.
pub async fn missing_key_not_found(fixture: &Fixture) {
    let s = fixture.store().await;
    let key = "missing/key";
    not_found(s.load(key).await, "load of a missing key");
    not_found(s.stat(key).await, "stat of a missing key");
    not_found(s.delete(key).await, "delete of a missing key");
    assert!(
        !ok(s.exists(key).await, "exists"),
        "a missing key must not exist"
    );
    match s.load(key).await {
        Err(Error::NotFound { key: got }) => assert_eq!(got, key, "NotFound names the key"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    ok(s.store("missing/prefix/child", b"x").await, "store child");
    not_found(s.load("missing/prefix").await, "load of a prefix");
    not_found(
        s.load("missing/prefix/child/grandchild").await,
        "load below a value",
    );
    not_found(
        s.stat("missing/prefix/other").await,
        "stat of a missing sibling",
    );
    assert!(everything(&*s).await == vec!["missing/prefix/child".to_owned()]);
}

/// `exists` is true for keys and for every prefix above them, false for partial
/// segments, for keys below a value and after deletion.
pub async fn exists_keys_and_prefixes(fixture: &Fixture) {
    let s = fixture.store().await;
    ok(s.store("ex/a/b/c", b"v").await, "store");
    for key in ["ex", "ex/a", "ex/a/b", "ex/a/b/c"] {
        assert!(ok(s.exists(key).await, key), "{key} must exist");
    }
    for key in ["e", "ex/a/b/c/d", "ex/a/b/cc", "ex/a/bb", "ex/x", "ex/a/c"] {
        assert!(!ok(s.exists(key).await, key), "{key} must not exist");
    }
    ok(s.delete("ex/a/b/c").await, "delete");
    for key in ["ex", "ex/a", "ex/a/b", "ex/a/b/c"] {
        assert!(
            !ok(s.exists(key).await, key),
            "{key} must not exist once the only key below it is deleted"
        );
    }
    assert!(
        everything(&*s).await.is_empty(),
        "nothing left after delete"
    );
}

/// `stat` of a key reports its size, a recent time and `is_terminal`; of a prefix,
/// `is_terminal == false` and size 0.
pub async fn stat_key_and_prefix(fixture: &Fixture) {
    let s = fixture.store().await;
    let key = "st/dir/file";
    ok(s.store(key, b"12345").await, "store");
    let info = ok(s.stat(key).await, "stat key");
    assert_eq!(info.key, key);
    assert_eq!(info.size, 5);
    assert!(info.is_terminal, "stat of a key: is_terminal");
    assert_recent(info.modified, "stat of a fresh key");
    for prefix in ["st", "st/dir"] {
        let info = ok(s.stat(prefix).await, prefix);
        assert_eq!(info.key, prefix);
        assert!(
            !info.is_terminal,
            "stat of prefix {prefix}: is_terminal must be false"
        );
        assert_eq!(info.size, 0, "stat of prefix {prefix}: size");
        assert_recent(info.modified, format_args!("stat of prefix {prefix}"));
    }
    not_found(s.stat("st/di").await, "stat of a partial segment");
}

/// Overwriting a value moves its modification time forward: stored, stat'ed, stored
/// again a little more than the backend's
/// [`timestamp_resolution`](crate::Capabilities::timestamp_resolution) later, the second
/// `stat` reports a strictly later time (renewal and cleaning decisions read it).
pub async fn modified_moves_forward_on_overwrite(fixture: &Fixture) {
    let s = fixture.store().await;
    let resolution = fixture.capabilities().timestamp_resolution;
    let key = "modified/forward";
    ok(s.store(key, b"first").await, "store first");
    let first = ok(s.stat(key).await, "stat after the first store").modified;
    tokio::time::sleep(resolution + resolution / 2 + std::time::Duration::from_millis(5)).await;
    ok(s.store(key, b"second").await, "store second");
    let second = ok(s.stat(key).await, "stat after the overwrite").modified;
    assert!(
        second > first,
        "an overwrite {resolution:?}+ later did not move the modification time forward: \
         {first:?} then {second:?}"
    );
}
