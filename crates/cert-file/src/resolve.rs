//! Fast, link-refusing lookups: on Linux, `openat2` with `RESOLVE_NO_SYMLINKS` walks a
//! whole path in one system call and fails with `ELOOP` on any symbolic link, where the
//! portable way checks every intermediate directory with its own `symlink_metadata`.
//!
//! The root is resolved once (`canonicalize`, when it first exists) so links in the
//! root's own path, which are allowed, do not trip the check. Whenever the fast way
//! cannot answer (another system, a kernel or sandbox without `openat2`, a link found and
//! to be reported precisely), callers fall back to the portable walk.

use std::fs::{File, Metadata};
use std::io;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Per-root state of the fast lookups.
#[derive(Debug, Default)]
pub(crate) struct Resolver {
    canonical_root: OnceLock<PathBuf>,
    pub(crate) unsupported: AtomicBool,
}

/// What a fast lookup found.
pub(crate) enum Probe {
    /// Nothing at the path (or a file stands where a directory is needed on the way).
    Absent,
    /// A directory, opened `O_PATH`, at this path.
    Dir(File, PathBuf),
    /// Something else, described without following a link, at this path.
    Other(Metadata, PathBuf),
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use rustix::fs::{CWD, Mode, OFlags, ResolveFlags, openat2};

    impl Resolver {
        fn base(&self, root: &std::path::Path) -> Option<&PathBuf> {
            if self.unsupported.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(base) = self.canonical_root.get() {
                return Some(base);
            }
            let canonical = std::fs::canonicalize(root).ok()?;
            Some(self.canonical_root.get_or_init(|| canonical))
        }

        fn open(
            &self,
            root: &std::path::Path,
            rel: &str,
            flags: OFlags,
        ) -> Option<(io::Result<File>, PathBuf)> {
            let path = self.base(root)?.join(rel);
            let result = openat2(
                CWD,
                &path,
                flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            );
            match result {
                Ok(fd) => Some((Ok(File::from(fd)), path)),
                Err(errno) => {
                    let err = io::Error::from(errno);
                    match err.raw_os_error() {
                        Some(
                            libc::ENOSYS
                            | libc::EPERM
                            | libc::E2BIG
                            | libc::EINVAL
                            | libc::EOPNOTSUPP,
                        ) => {
                            self.unsupported.store(true, Ordering::Relaxed);
                            None
                        }
                        // A link somewhere: let the portable walk name it.
                        Some(libc::ELOOP) => None,
                        _ => Some((Err(err), path)),
                    }
                }
            }
        }

        /// Opens `rel` below `root` for reading, refusing links on the whole way.
        /// `None`: use the portable way.
        pub(crate) fn open_read(
            &self,
            root: &std::path::Path,
            rel: &str,
        ) -> Option<(io::Result<File>, PathBuf)> {
            self.open(root, rel, OFlags::RDONLY | OFlags::NONBLOCK)
        }

        /// Finds what is at `rel` below `root`, refusing links on the way: one system
        /// call for an absent key or a directory, two for a file. `None`: use the
        /// portable way.
        pub(crate) fn probe(&self, root: &std::path::Path, rel: &str) -> Option<io::Result<Probe>> {
            let (result, path) = self.open(root, rel, OFlags::PATH | OFlags::DIRECTORY)?;
            match result {
                Ok(dir) => Some(Ok(Probe::Dir(dir, path))),
                Err(err) if err.kind() == io::ErrorKind::NotFound => Some(Ok(Probe::Absent)),
                // Not a directory: the key itself (every directory before it was walked
                // without meeting a link), or a file on the way (then lstat fails too).
                Err(err) if err.kind() == io::ErrorKind::NotADirectory => {
                    match std::fs::symlink_metadata(&path) {
                        Ok(meta) => Some(Ok(Probe::Other(meta, path))),
                        Err(err) if crate::error::is_absent(&err) => Some(Ok(Probe::Absent)),
                        Err(err) => Some(Err(err)),
                    }
                }
                Err(err) => Some(Err(err)),
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    impl Resolver {
        pub(crate) fn open_read(
            &self,
            _root: &std::path::Path,
            _rel: &str,
        ) -> Option<(io::Result<File>, PathBuf)> {
            let _ = (&self.canonical_root, &self.unsupported, Ordering::Relaxed);
            None
        }

        pub(crate) fn probe(
            &self,
            _root: &std::path::Path,
            _rel: &str,
        ) -> Option<io::Result<Probe>> {
            None
        }
    }
}
