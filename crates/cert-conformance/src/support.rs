//! Small assertion helpers shared by the cases. Cases fail by panicking, like any test.

use std::fmt::{Debug, Display};
use std::time::{Duration, SystemTime};

use cert_core::{Error, Result, Storage};

/// The value of `result`, or a panic naming `what` and the error.
#[track_caller]
pub(crate) fn ok<T>(result: Result<T>, what: impl Display) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("{what}: unexpected error {err:?} ({err})"),
    }
}

/// Panics unless `result` is [`Error::NotFound`].
#[track_caller]
pub(crate) fn not_found<T: Debug>(result: Result<T>, what: impl Display) {
    match result {
        Err(Error::NotFound { .. }) => {}
        other => panic!("{what}: expected Error::NotFound, got {other:?}"),
    }
}

/// Panics unless `result` is [`Error::InvalidKey`] for `key`.
#[track_caller]
pub(crate) fn invalid_key<T: Debug>(result: Result<T>, key: &str, what: impl Display) {
    match result {
        Err(Error::InvalidKey { key: got, .. }) => {
            assert_eq!(got, key, "{what}: InvalidKey names another key");
        }
        other => panic!("{what} with key {key:?}: expected Error::InvalidKey, got {other:?}"),
    }
}

/// Panics unless `result` is [`Error::LockLost`].
#[track_caller]
pub(crate) fn lock_lost<T: Debug>(result: Result<T>, what: impl Display) {
    match result {
        Err(Error::LockLost { .. }) => {}
        other => panic!("{what}: expected Error::LockLost, got {other:?}"),
    }
}

/// Panics unless releasing `lease` succeeded, or found it lost once it had run out: on a
/// server slowed down by other work, the steps of a case can outlast a lease that is
/// never refreshed, and only then may its release find it gone.
#[track_caller]
pub(crate) fn released(result: Result<()>, lease: &cert_core::Lease, what: impl Display) {
    match result {
        Ok(()) => {}
        Err(Error::LockLost { .. }) if lease.is_expired() => {}
        Err(err) => panic!("{what}: unexpected error {err:?} ({err}) while the lease was live"),
    }
}

/// Loads `key` and panics unless it holds `want`.
#[track_caller]
pub(crate) fn assert_value(got: Result<Vec<u8>>, key: &str, want: &[u8]) {
    let got = ok(got, format_args!("load {key:?}"));
    if got != want {
        panic!(
            "load {key:?}: got {} bytes {}, want {} bytes {}",
            got.len(),
            preview(&got),
            want.len(),
            preview(want)
        );
    }
}

/// The first bytes of `bytes`, for messages about large values.
pub(crate) fn preview(bytes: &[u8]) -> String {
    const SHOWN: usize = 32;
    if bytes.len() <= SHOWN {
        format!("{bytes:?}")
    } else {
        format!("{:?}...", &bytes[..SHOWN])
    }
}

/// Everything stored in the namespace, recursively from the root.
pub(crate) async fn everything(store: &dyn Storage) -> Vec<String> {
    ok(store.list("", true).await, "list \"\" recursively")
}

/// Panics unless `time` lies within a minute of `now` (clocks of a server may differ a
/// little from this host's).
#[track_caller]
pub(crate) fn assert_recent(time: SystemTime, what: impl Display) {
    let now = SystemTime::now();
    let window = Duration::from_secs(60);
    let skew = match time.duration_since(now) {
        Ok(ahead) => ahead,
        Err(behind) => behind.duration(),
    };
    assert!(
        skew <= window,
        "{what}: modified time {time:?} is not within {window:?} of now ({now:?})"
    );
}

/// Checks that `list` is sorted bytewise and has no duplicates.
#[track_caller]
pub(crate) fn assert_sorted_unique(list: &[String], what: impl Display) {
    for pair in list.windows(2) {
        assert!(
            pair[0].as_bytes() < pair[1].as_bytes(),
            "{what}: not sorted bytewise or duplicated: {:?} before {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// The bytewise sorted copy of `keys`.
pub(crate) fn sorted<S: AsRef<str>>(keys: &[S]) -> Vec<String> {
    let mut out: Vec<String> = keys.iter().map(|k| k.as_ref().to_owned()).collect();
    out.sort_unstable();
    out.dedup();
    out
}
