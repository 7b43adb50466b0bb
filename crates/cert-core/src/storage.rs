//! The [`Storage`] contract: an async key-value store shared by every node of a cluster.

use std::fmt::Debug;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, KeyProblem, Result};
use crate::lock::Lease;

/// The longest key accepted, in bytes (the limit of S3 object names).
pub const MAX_KEY_LEN: usize = 1024;

/// The longest `/`-separated key segment accepted, in bytes. File systems cap a file name
/// at 255 bytes; the rest is room for a backend's own suffixes.
pub const MAX_SEGMENT_LEN: usize = 200;

/// The largest value accepted, in bytes (8 MiB). Certificates, keys and account data are
/// a few KiB; the limit keeps every backend (a MySQL packet, a Redis string) well inside
/// what it can carry.
pub const MAX_VALUE_LEN: usize = 8 * 1024 * 1024;

/// Segments starting with this are reserved for backends' own bookkeeping (temporary files,
/// lock files) and refused as keys.
pub const RESERVED_PREFIX: &str = ".certstore";

/// What [`Storage::stat`] reports about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The key, as asked for.
    pub key: String,
    /// The value's size in bytes; 0 for a prefix.
    pub size: u64,
    /// When the value was last written; for a prefix, a backend-defined time (the
    /// directory's modification time, or the newest key below it).
    pub modified: SystemTime,
    /// `true` for a key holding a value, `false` for a prefix with keys below it.
    pub is_terminal: bool,
}

impl KeyInfo {
    /// Information about a key holding a value of `size` bytes.
    pub fn terminal(key: impl Into<String>, size: u64, modified: SystemTime) -> Self {
        KeyInfo {
            key: key.into(),
            size,
            modified,
            is_terminal: true,
        }
    }

    /// Information about a prefix with keys below it.
    pub fn prefix(key: impl Into<String>, modified: SystemTime) -> Self {
        KeyInfo {
            key: key.into(),
            size: 0,
            modified,
            is_terminal: false,
        }
    }
}

/// An async key-value store shared by a cluster.
///
/// Keys are `/`-separated paths checked by [`validate_key`]; every backend calls it, so a
/// bad key is the same [`Error::InvalidKey`] everywhere and nothing is touched.
///
/// Contract (the `cert-conformance` crate checks every point):
/// - [`store`](Storage::store) creates or overwrites atomically: a concurrent reader sees
///   the old or the new value, never a mix. Values larger than [`MAX_VALUE_LEN`] are
///   refused with [`Error::TooLarge`].
/// - [`load`](Storage::load) returns the bytes or [`Error::NotFound`]; a prefix is not a
///   value.
/// - [`exists`](Storage::exists) is true for a key holding a value and for a prefix with
///   keys below it.
/// - [`stat`](Storage::stat) describes a key or a prefix, or returns `NotFound`.
/// - [`delete`](Storage::delete) removes a key and every key below it; deleting what does
///   not exist is `NotFound`.
/// - [`list`](Storage::list) returns full keys, sorted bytewise. Non-recursive: the direct
///   children of `prefix` (keys and sub-prefixes, each once). Recursive: every key holding
///   a value below `prefix`. The prefix is matched by whole segments (`a` is not a prefix
///   of `ab/c`); `""` lists from the root; an absent prefix lists nothing.
#[async_trait]
pub trait Storage: Debug + Send + Sync + 'static {
    /// Creates or overwrites the value at `key`, atomically.
    async fn store(&self, key: &str, value: &[u8]) -> Result<()>;

    /// Returns the value at `key`.
    async fn load(&self, key: &str) -> Result<Vec<u8>>;

    /// Removes `key` and every key below it.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Whether `key` holds a value or is a prefix of keys that do.
    async fn exists(&self, key: &str) -> Result<bool>;

    /// Lists the keys below `prefix` (see the trait docs for the exact rules).
    async fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>>;

    /// Describes `key`.
    async fn stat(&self, key: &str) -> Result<KeyInfo>;

    /// Stores `value` at `key` only while `lease` (taken from this backend's
    /// [`Locker`](crate::Locker)) is still held; [`Error::LockLost`] otherwise, and the
    /// stored value is left as it was.
    ///
    /// The default checks the lease's local deadline with a margin
    /// ([`Lease::check_fence`]) and then stores: a writer that stalls for longer than the
    /// margin between the check and the write can still land after its lease ran out.
    /// Backends that can check the lock and write in one server-side step (a script, a
    /// transaction against the lock row, a write under the lock file's guard) override it
    /// so that a write from a lease that expired and was taken over is always refused.
    async fn store_fenced(&self, key: &str, value: &[u8], lease: &Lease) -> Result<()> {
        lease.check_fence()?;
        self.store(key, value).await
    }

    /// Deletes `key` (and every key below it) only while `lease` is still held, like
    /// [`store_fenced`](Storage::store_fenced).
    async fn delete_fenced(&self, key: &str, lease: &Lease) -> Result<()> {
        lease.check_fence()?;
        self.delete(key).await
    }
}

/// Helpers on top of [`Storage`], available on every implementation.
#[async_trait]
pub trait StorageExt: Storage {
    /// Like [`load`](Storage::load), but `Ok(None)` when the key does not exist.
    async fn load_opt(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.load(key).await {
            Ok(value) => Ok(Some(value)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Loads `key` and decodes it from JSON; a value that does not decode is
    /// [`Error::Corrupt`].
    async fn load_json<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let bytes = self.load(key).await?;
        serde_json::from_slice(&bytes).map_err(|err| Error::corrupt(key, err))
    }

    /// Encodes `value` as JSON and stores it at `key`.
    async fn store_json<T: Serialize + Sync>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|err| Error::backend("json", err))?;
        self.store(key, &bytes).await
    }
}

impl<S: Storage + ?Sized> StorageExt for S {}

/// Checks `key` against the rules every backend shares:
/// not empty, at most [`MAX_KEY_LEN`] bytes, no leading or trailing `/`, no empty, `.` or
/// `..` segment, segments at most [`MAX_SEGMENT_LEN`] bytes, no control character, NUL,
/// DEL or backslash, and no segment starting with [`RESERVED_PREFIX`].
pub fn validate_key(key: &str) -> Result<()> {
    check_key(key).map_err(|problem| Error::InvalidKey {
        key: key.to_owned(),
        problem,
    })
}

/// Checks a listing prefix: `""` (the root) or a valid key.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        Ok(())
    } else {
        validate_key(prefix)
    }
}

/// Checks that a value of `size` bytes for `key` is within [`MAX_VALUE_LEN`].
pub fn validate_value(key: &str, size: usize) -> Result<()> {
    if size > MAX_VALUE_LEN {
        return Err(Error::TooLarge {
            key: key.to_owned(),
            size,
            limit: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), KeyProblem> {
    if key.is_empty() {
        return Err(KeyProblem::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyProblem::TooLong);
    }
    if key.starts_with('/') || key.ends_with('/') {
        return Err(KeyProblem::LeadingOrTrailingSlash);
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err(KeyProblem::EmptySegment),
            "." | ".." => return Err(KeyProblem::DotSegment),
            _ => {}
        }
        if segment.len() > MAX_SEGMENT_LEN {
            return Err(KeyProblem::SegmentTooLong);
        }
        if segment.starts_with(RESERVED_PREFIX) {
            return Err(KeyProblem::Reserved);
        }
    }
    for c in key.chars() {
        if c.is_control() {
            return Err(KeyProblem::ControlCharacter);
        }
        if c == '\\' {
            return Err(KeyProblem::Backslash);
        }
    }
    Ok(())
}

/// Whether `key` lies below `prefix` by whole segments (`""` is above every key).
pub fn is_below(key: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || (key.len() > prefix.len()
            && key.starts_with(prefix)
            && key.as_bytes()[prefix.len()] == b'/')
}

/// The string that starts the range of keys strictly below `prefix`: `""` for the root,
/// else `prefix/`. Together with [`range_end`] it lets ordered backends (B-trees, sorted
/// sets, SQL indexes) list by range instead of pattern matching.
pub fn range_start(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

/// The exclusive end of the range of keys below `prefix`: `prefix0` (`'0'` follows `'/'`),
/// or `None` for the root, which has no upper bound.
pub fn range_end(prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        None
    } else {
        Some(format!("{prefix}0"))
    }
}

/// Builds a [`Storage::list`] answer from the keys holding values below `prefix`, in any
/// order: the keys themselves when `recursive`, else the direct children. The result is
/// sorted and has no duplicates. Keys not below `prefix` are ignored, so a backend cannot
/// leak keys from outside the prefix even if its own filter is too wide.
pub fn list_from_keys<I, K>(prefix: &str, keys: I, recursive: bool) -> Vec<String>
where
    I: IntoIterator<Item = K>,
    K: AsRef<str>,
{
    let skip = if prefix.is_empty() {
        0
    } else {
        prefix.len() + 1
    };
    let mut out: Vec<String> = keys
        .into_iter()
        .filter(|key| is_below(key.as_ref(), prefix))
        .map(|key| {
            let key = key.as_ref();
            if recursive {
                return key.to_owned();
            }
            match key[skip..].find('/') {
                Some(end) => key[..skip + end].to_owned(),
                None => key.to_owned(),
            }
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for key in [
            "a",
            "certificates/acme-v02/example.com/example.com.crt",
            "wild/_.example.com",
            "sp ace/%25/*/ünïcödé/日本",
            "a.b/..c/c..",
            ".hidden/x",
        ] {
            assert!(validate_key(key).is_ok(), "{key:?} should be valid");
        }
        assert!(validate_key(&"a".repeat(MAX_SEGMENT_LEN)).is_ok());
    }

    #[test]
    fn refuses_bad_keys_with_the_reason() {
        let long_key = vec!["a".repeat(100); 11].join("/");
        let cases: Vec<(String, KeyProblem)> = vec![
            (String::new(), KeyProblem::Empty),
            ("/a".into(), KeyProblem::LeadingOrTrailingSlash),
            ("a/".into(), KeyProblem::LeadingOrTrailingSlash),
            ("a//b".into(), KeyProblem::EmptySegment),
            ("a/./b".into(), KeyProblem::DotSegment),
            ("../etc/passwd".into(), KeyProblem::DotSegment),
            ("a/..".into(), KeyProblem::DotSegment),
            ("a\0b".into(), KeyProblem::ControlCharacter),
            ("a\nb".into(), KeyProblem::ControlCharacter),
            ("a\u{7f}".into(), KeyProblem::ControlCharacter),
            ("a\\..\\b".into(), KeyProblem::Backslash),
            (".certstore-locks/x".into(), KeyProblem::Reserved),
            ("a/.certstore-tmp".into(), KeyProblem::Reserved),
            ("a".repeat(MAX_SEGMENT_LEN + 1), KeyProblem::SegmentTooLong),
            (long_key, KeyProblem::TooLong),
        ];
        for (key, want) in cases {
            match validate_key(&key) {
                Err(Error::InvalidKey {
                    key: got_key,
                    problem,
                }) => {
                    assert_eq!(problem, want, "{key:?}");
                    assert_eq!(got_key, key);
                }
                other => panic!("{key:?}: expected InvalidKey, got {other:?}"),
            }
        }
    }

    #[test]
    fn prefixes_and_values() {
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("a/b").is_ok());
        assert!(validate_prefix("a/").is_err());
        assert!(validate_value("k", MAX_VALUE_LEN).is_ok());
        assert!(matches!(
            validate_value("k", MAX_VALUE_LEN + 1),
            Err(Error::TooLarge { size, limit, .. }) if size == MAX_VALUE_LEN + 1 && limit == MAX_VALUE_LEN
        ));
    }

    #[test]
    fn below_matches_whole_segments() {
        assert!(is_below("a/b", "a"));
        assert!(is_below("a/b/c", "a/b"));
        assert!(!is_below("ab/c", "a"));
        assert!(!is_below("a", "a"));
        assert!(is_below("a", ""));
        let start = range_start("a");
        let end = range_end("a").unwrap_or_default();
        for key in ["a/b", "a/b/c", "a/~", "a/\u{10ffff}"] {
            assert!(key >= start.as_str() && key < end.as_str(), "{key}");
        }
        for key in ["a", "a-b/c", "a.b", "a0", "ab/c"] {
            assert!(!(key >= start.as_str() && key < end.as_str()), "{key}");
        }
    }

    #[test]
    fn list_groups_children_sorted() {
        let keys = ["a/b/c", "a/b-x", "a/b/d", "a/e", "ab/c", "z"];
        assert_eq!(
            list_from_keys("a", keys, false),
            vec!["a/b", "a/b-x", "a/e"]
        );
        assert_eq!(
            list_from_keys("a", keys, true),
            vec!["a/b-x", "a/b/c", "a/b/d", "a/e"]
        );
        assert_eq!(list_from_keys("", keys, false), vec!["a", "ab", "z"]);
        assert!(list_from_keys("q", keys, true).is_empty());
    }
}
