//! The file backend's own failures and how io errors become [`cert_core::Error`]s.

use std::io;
use std::path::{Path, PathBuf};

use cert_core::Error;

/// The name this backend reports in [`Error::Backend`] and [`Error::Unavailable`].
pub(crate) const BACKEND: &str = "file";

/// A failure specific to the file backend, carried as the `source` of
/// [`Error::Backend`] (or [`Error::Unavailable`]) with `backend: "file"`.
///
/// Callers that need the detail can downcast the source:
///
/// ```
/// # use cert_file::FileError;
/// fn is_symlink_refusal(err: &cert_core::Error) -> bool {
///     match err {
///         cert_core::Error::Backend { source, .. } => {
///             matches!(source.downcast_ref::<FileError>(), Some(FileError::Symlink { .. }))
///         }
///         _ => false,
///     }
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// A path inside the root is a symbolic link. The backend never follows links, so a
    /// link planted inside the root cannot make it read or write outside the root.
    #[error("refusing to follow the symbolic link at {path}")]
    Symlink {
        /// The link's path.
        path: PathBuf,
    },
    /// A file that is not a regular file or directory (a FIFO, socket or device) sits
    /// where a key or prefix should be.
    #[error("{path} is not a regular file or directory")]
    NotRegular {
        /// The offending path.
        path: PathBuf,
    },
    /// A lock file exists but cannot be parsed.
    #[error("malformed lock file {path}")]
    MalformedLock {
        /// The lock file's path.
        path: PathBuf,
    },
    /// The per-lock guard stayed held by another process for longer than a guard is ever
    /// needed; it will be broken once it is stale.
    #[error("lock guard {path} is busy")]
    GuardBusy {
        /// The guard file's path.
        path: PathBuf,
    },
    /// A write kept racing with concurrent deletes of its parent directories.
    #[error("gave up writing {path} after {attempts} attempts raced with concurrent deletes")]
    Contended {
        /// The path being written.
        path: PathBuf,
        /// How many attempts were made.
        attempts: u32,
    },
    /// An operating system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`"open"`, `"rename"`, ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// Whether an io error means "this path is not there" (including a file standing where a
/// directory was expected on the way to it).
pub(crate) fn is_absent(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.kind() == io::ErrorKind::NotADirectory
}

/// Whether an io error is `ELOOP`, what `O_NOFOLLOW` reports on a symbolic link.
pub(crate) fn is_loop(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ELOOP)
}

/// Maps an io error on `path` to the shared error type: absent paths are `NotFound` for
/// `key`, transient network file system failures are `Unavailable`, everything else is
/// `Backend` with the operation and the path in the message.
pub(crate) fn io_error(key: &str, op: &'static str, path: &Path, err: io::Error) -> Error {
    if is_absent(&err) {
        return Error::not_found(key);
    }
    if is_loop(&err) {
        return symlink(path);
    }
    let transient = matches!(
        err.kind(),
        io::ErrorKind::TimedOut
            | io::ErrorKind::StaleNetworkFileHandle
            | io::ErrorKind::Interrupted
            | io::ErrorKind::ResourceBusy
    );
    let source = FileError::Io {
        op,
        path: path.to_owned(),
        source: err,
    };
    if transient {
        Error::unavailable(BACKEND, source)
    } else {
        Error::backend(BACKEND, source)
    }
}

/// Like [`io_error`], but an absent path is a `Backend` error too: for paths the
/// operation itself just created or must find (temporary files, lock directories).
pub(crate) fn io_failure(op: &'static str, path: &Path, err: io::Error) -> Error {
    if is_loop(&err) {
        return symlink(path);
    }
    Error::backend(
        BACKEND,
        FileError::Io {
            op,
            path: path.to_owned(),
            source: err,
        },
    )
}

/// The refusal to follow a symbolic link at `path`.
pub(crate) fn symlink(path: &Path) -> Error {
    Error::backend(
        BACKEND,
        FileError::Symlink {
            path: path.to_owned(),
        },
    )
}

/// The refusal to use a FIFO, socket or device at `path`.
pub(crate) fn not_regular(path: &Path) -> Error {
    Error::backend(
        BACKEND,
        FileError::NotRegular {
            path: path.to_owned(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_paths_are_not_found() {
        let err = io_error(
            "a/b",
            "open",
            Path::new("/r/a/b"),
            io::Error::from(io::ErrorKind::NotFound),
        );
        assert!(matches!(err, Error::NotFound { ref key } if key == "a/b"));
    }

    #[test]
    fn other_errors_name_the_path_and_keep_the_source() {
        let err = io_error(
            "a",
            "open",
            Path::new("/r/a"),
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        let Error::Backend { backend, source } = &err else {
            panic!("expected Backend, got {err:?}");
        };
        assert_eq!(*backend, "file");
        let text = source.to_string();
        assert!(text.contains("/r/a") && text.starts_with("open"), "{text}");
        assert!(std::error::Error::source(source.as_ref()).is_some());
    }

    #[test]
    fn eloop_is_a_symlink_refusal() {
        let err = io_error(
            "a",
            "open",
            Path::new("/r/a"),
            io::Error::from_raw_os_error(libc::ELOOP),
        );
        let Error::Backend { source, .. } = &err else {
            panic!("expected Backend, got {err:?}");
        };
        assert!(matches!(
            source.downcast_ref::<FileError>(),
            Some(FileError::Symlink { .. })
        ));
    }

    #[test]
    fn transient_errors_are_retryable() {
        let err = io_error(
            "a",
            "read",
            Path::new("/r/a"),
            io::Error::from(io::ErrorKind::TimedOut),
        );
        assert!(err.is_retryable());
    }
}
