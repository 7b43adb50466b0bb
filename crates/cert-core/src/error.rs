//! The one error type every storage backend returns.

use std::fmt;

/// A boxed error from a backend's client library, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for `Result<T, cert_core::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a key (or lock name) was refused by [`validate_key`](crate::validate_key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The key is the empty string.
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes.
    TooLong,
    /// One `/`-separated segment is longer than [`MAX_SEGMENT_LEN`](crate::MAX_SEGMENT_LEN) bytes.
    SegmentTooLong,
    /// The key starts or ends with `/`.
    LeadingOrTrailingSlash,
    /// The key contains `//`.
    EmptySegment,
    /// A segment is `.` or `..`.
    DotSegment,
    /// The key contains NUL, another control character or DEL.
    ControlCharacter,
    /// The key contains a backslash, a path separator on some systems.
    Backslash,
    /// A segment starts with the prefix backends reserve for their own files.
    Reserved,
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyProblem::Empty => "key is empty",
            KeyProblem::TooLong => "key is longer than 1024 bytes",
            KeyProblem::SegmentTooLong => "a key segment is longer than 200 bytes",
            KeyProblem::LeadingOrTrailingSlash => "key starts or ends with '/'",
            KeyProblem::EmptySegment => "key contains an empty segment ('//')",
            KeyProblem::DotSegment => "key contains a '.' or '..' segment",
            KeyProblem::ControlCharacter => "key contains a control character",
            KeyProblem::Backslash => "key contains a backslash",
            KeyProblem::Reserved => "key segment starts with the reserved prefix '.certstore'",
        })
    }
}

/// Every failure a [`Storage`](crate::Storage) or [`Locker`](crate::Locker) reports.
///
/// Backends map their client errors into these variants and keep the original error as
/// `source`, so callers can match on the kind of failure without knowing the backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key (or prefix) does not exist.
    #[error("not found: {key}")]
    NotFound {
        /// The key that was looked up.
        key: String,
    },
    /// The key or lock name is not acceptable; nothing was read or written.
    #[error("invalid key {key:?}: {problem}")]
    InvalidKey {
        /// The refused key, as given.
        key: String,
        /// What is wrong with it.
        problem: KeyProblem,
    },
    /// The value is larger than the storage accepts; nothing was written.
    #[error("value for {key} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// The key the value was meant for.
        key: String,
        /// The value's size in bytes.
        size: usize,
        /// The largest size accepted.
        limit: usize,
    },
    /// The operation conflicts with what is stored, for example a value stored where a
    /// prefix with keys below it exists on a hierarchical backend.
    #[error("conflict at {key}: {reason}")]
    Conflict {
        /// The key that conflicts.
        key: String,
        /// What the conflict is.
        reason: String,
    },
    /// The backend cannot be reached or is overloaded; retrying later may succeed.
    #[error("{backend} is unavailable: {source}")]
    Unavailable {
        /// The backend's name, for example `"redis"`.
        backend: &'static str,
        /// What the client library reported.
        #[source]
        source: BoxError,
    },
    /// The stored bytes cannot be what was written: a damaged file, a value that fails to
    /// decrypt or authenticate, or malformed metadata.
    #[error("corrupt value at {key}: {source}")]
    Corrupt {
        /// The key whose value is damaged.
        key: String,
        /// What was wrong with it.
        #[source]
        source: BoxError,
    },
    /// A lock lease is no longer held by the caller: it expired, was taken over, or the
    /// token is not the current holder's.
    #[error("lock {name} is not held by this lease")]
    LockLost {
        /// The lock's name.
        name: String,
    },
    /// Waiting for a lock ran past its deadline.
    #[error("timed out waiting for lock {name}")]
    LockTimeout {
        /// The lock's name.
        name: String,
    },
    /// Any other failure of the backend.
    #[error("{backend} error: {source}")]
    Backend {
        /// The backend's name, for example `"file"`.
        backend: &'static str,
        /// What the client library reported.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// `NotFound` for `key`.
    pub fn not_found(key: impl Into<String>) -> Self {
        Error::NotFound { key: key.into() }
    }

    /// `Unavailable` for `backend`, wrapping `source`.
    pub fn unavailable(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            backend,
            source: source.into(),
        }
    }

    /// `Backend` for `backend`, wrapping `source`.
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }

    /// `Corrupt` for `key`, wrapping `source`.
    pub fn corrupt(key: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Corrupt {
            key: key.into(),
            source: source.into(),
        }
    }

    /// Whether the same call may succeed if retried later (the backend was unreachable,
    /// overloaded or timed out).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// The variant as a short lower-case word (`not_found`, `unavailable`, `lock_lost`,
    /// ...): a label value for metrics and logs that carries no key or message.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::InvalidKey { .. } => "invalid_key",
            Error::TooLarge { .. } => "too_large",
            Error::Conflict { .. } => "conflict",
            Error::Unavailable { .. } => "unavailable",
            Error::Corrupt { .. } => "corrupt",
            Error::LockLost { .. } => "lock_lost",
            Error::LockTimeout { .. } => "lock_timeout",
            Error::Backend { .. } => "backend",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_retryable() {
        let io = || std::io::Error::other("boom");
        assert!(Error::unavailable("redis", io()).is_retryable());
        assert!(!Error::backend("redis", io()).is_retryable());
        assert!(!Error::not_found("a").is_retryable());
        assert!(Error::not_found("a").is_not_found());
        assert_eq!(Error::unavailable("redis", io()).kind(), "unavailable");
        assert_eq!(Error::LockLost { name: "a".into() }.kind(), "lock_lost");
    }

    #[test]
    fn messages_name_the_key_and_keep_the_source() {
        let err = Error::corrupt("certificates/a", std::io::Error::other("bad tag"));
        assert_eq!(err.to_string(), "corrupt value at certificates/a: bad tag");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("bad tag"));
    }
}
