//! File system storage and locks for certstore: [`FileStorage`] keeps every key as a file
//! below one root directory and implements both [`Storage`] and [`Locker`], safe for many
//! processes on one host and on a shared (network) mount.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cert_core::{lock, LockOptions, Locker, Storage, StorageExt};
//! use cert_file::FileStorage;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cert_core::Result<()> {
//! # let dir = tempfile::tempdir().map_err(|e| cert_core::Error::backend("file", e))?;
//! let storage = Arc::new(
//!     FileStorage::new(dir.path().join("certstore"))
//!         .with_clock_skew_tolerance(Duration::from_secs(2)),
//! );
//! let guard = lock(storage.clone() as Arc<dyn Locker>, "issue/example.com", &LockOptions::default()).await?;
//! if storage.load_opt("certificates/local/example.com/example.com.crt").await?.is_none() {
//!     storage.store("certificates/local/example.com/example.com.crt", b"PEM").await?;
//! }
//! guard.release().await?;
//! assert_eq!(storage.list("certificates", true).await?, ["certificates/local/example.com/example.com.crt"]);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout and guarantees
//!
//! - The key `a/b/c` is the file `<root>/a/b/c`; the prefix `a/b` is a directory. A key
//!   cannot hold a value and have keys below it ([`Error::Conflict`], like
//!   [`cert_core::MemoryStorage`]). Deleting the last key of a directory removes the
//!   directories it leaves empty, so `exists` and `list` agree with the memory backend.
//! - Writes are atomic: the value goes to a temporary file in the same directory
//!   (`.certstore-tmp-<random>`, created `O_EXCL`, mode 0600), is fsynced, renamed over
//!   the key, and the directory is fsynced. A writer killed half way leaves the old value
//!   (and maybe a temporary file, which is never listed nor counted by `exists` or
//!   `stat`, and never keeps a value from replacing a directory without keys). The
//!   cleaning in [`Locker::clean_expired_locks`] removes such leftovers once older than
//!   [`LEFTOVER_GRACE`]; [`FileStorage::clean_up`] takes an age of your choice. Durable
//!   writes can be turned off with [`FileStorage::with_durable_writes`].
//! - Files are created with mode 0600, directories (the root too, when created here) with
//!   0700.
//! - Nothing inside the root is followed if it is a symbolic link: intermediate
//!   directories are checked with `symlink_metadata`, files are opened with
//!   `O_NOFOLLOW`. A link planted inside the root is refused with
//!   [`FileError::Symlink`] (inside [`Error::Backend`]), so a key can never reach
//!   outside the root. The root itself may be a link. The checks guard against links
//!   that exist when an operation starts; a process that can write inside the root
//!   while operations run can already change any value, and is trusted.
//! - On Linux, `load`, `exists` and `stat` resolve the whole path in one `openat2` call
//!   with `RESOLVE_NO_SYMLINKS` instead of one `symlink_metadata` per directory, and fall
//!   back to the portable checks where `openat2` is unavailable. For this the root's
//!   real path is resolved once, when first seen to exist: if the root is a link that is
//!   later pointed elsewhere, those reads keep using the old target until the
//!   [`FileStorage`] is created again.
//!
//! # Locks and clocks
//!
//! Locks live in `<root>/.certstore-locks/<name>.lock`, each holding the lease's token
//! and its expiry as wall-clock unix milliseconds. See the `lock` module source for the
//! full protocol: a free lock is taken with an atomic `hard_link`, an expired one is taken
//! over under a short-lived per-lock guard file so two waiters never both win, and
//! refresh and release check the token under that guard, so an old holder never clobbers
//! a new one.
//!
//! A file system has no server clock, so expiry is judged by the wall clocks of the
//! processes sharing the directory. A lease is taken over only once its expiry **plus the
//! clock-skew tolerance** has passed on the clock of the process taking it over
//! ([`FileStorage::with_clock_skew_tolerance`], default 1 s). Exclusion holds as long as
//! the clocks of any two hosts differ by less than that tolerance; keep hosts on NTP and
//! raise the tolerance if they can drift further. Processes on one host share a clock and
//! are always safe. A holder considers its own lease lost at the expiry itself, so
//! between expiry and expiry + tolerance nobody holds the lock. Lock files are not
//! fsynced: after a power loss the leases are gone, like their holders.
//!
//! # Fenced writes
//!
//! `store_fenced` and `delete_fenced` first check the lease's local deadline, then take
//! the lock file's guard, check that the lock file holds the lease's token and an expiry
//! still ahead of this host's clock, and write (temporary file, rename) or delete before
//! letting the guard go. A takeover needs that guard, so a lease that ran out and was
//! taken over is refused with [`Error::LockLost`], whatever the writer's own deadline
//! says. One window remains: the guard is trusted only while it is younger than half the
//! stale-guard age, checked right before the rename; a process that stalls between that
//! check and the rename for longer than half the stale-guard age, while its lease
//! expires (the deadline check leaves it at least the lease's fence margin), can have its
//! guard broken and the lock taken over before its rename lands. A write whose guard has
//! grown too old gives up with a retryable [`Error::Unavailable`] before the rename.
//!
//! Guard files live for a few system calls. One left by a process killed while holding
//! it is broken once older than [`FileStorage::with_stale_guard_after`] (default 5 s)
//! plus the tolerance.
//!
//! # Speed
//!
//! Loads, `exists` and `stat` run on the calling task: on a local disk they take a few
//! microseconds, less than a hop to the blocking thread pool. Loads of values larger
//! than the inline limit ([`FileStorage::with_inline_read_limit`], default 64 KiB) read
//! on the blocking pool; on a network mount that may stall, set the limit to 0 to move
//! every read there. Writes, deletes, listings and lock operations run on the blocking
//! pool, one hop per call. Listings use the directory entries' types and never stat a
//! listed file.
//!
//! [`Storage`]: cert_core::Storage
//! [`Locker`]: cert_core::Locker
//! [`Locker::clean_expired_locks`]: cert_core::Locker::clean_expired_locks
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cleanup;
mod error;
mod fs;
mod list;
mod lock;
mod lock_admin;
mod lock_file;
mod lock_guard;
mod path;
mod resolve;
mod storage;
mod temp;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cert_core::{Error, Result};

use crate::error::BACKEND;
pub use crate::error::FileError;

/// How old a temporary file or half-deleted directory must be before
/// [`Locker::clean_expired_locks`] removes it as left behind by an interrupted write or
/// delete (a process killed half way, a host that lost power). One hour: far longer than
/// any live write takes, even on a stalled network mount, so a write in progress never
/// loses its temporary file. [`FileStorage::clean_up`] takes any age.
///
/// [`Locker::clean_expired_locks`]: cert_core::Locker::clean_expired_locks
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(3600);

/// Settings shared by the clones of one [`FileStorage`].
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) root: PathBuf,
    pub(crate) durable: bool,
    pub(crate) clock_skew_tolerance: Duration,
    pub(crate) stale_guard_after: Duration,
    pub(crate) inline_read_limit: u64,
    pub(crate) resolver: Arc<resolve::Resolver>,
}

/// A [`Storage`] and [`Locker`] keeping each key as a file below a root directory.
///
/// Cheap to clone; clones share their settings. Several instances (in one process or
/// many, on one host or several sharing a mount) over the same root see each other's
/// values and locks. The root is created (mode 0700) on the first write if missing.
///
/// [`Storage`]: cert_core::Storage
/// [`Locker`]: cert_core::Locker
#[derive(Clone)]
pub struct FileStorage {
    config: Arc<Config>,
}

impl fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStorage")
            .field("root", &self.config.root)
            .finish()
    }
}

impl FileStorage {
    /// Storage rooted at `root`, with durable writes, a clock-skew tolerance of 1 s, stale
    /// guards broken after 5 s and reads up to 64 KiB done inline.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileStorage {
            config: Arc::new(Config {
                root: root.into(),
                durable: true,
                clock_skew_tolerance: Duration::from_secs(1),
                stale_guard_after: Duration::from_secs(5),
                inline_read_limit: 64 * 1024,
                resolver: Arc::default(),
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Whether writes are flushed to stable storage before they return (file and
    /// directory fsync). On by default; turning it off trades crash durability (a value
    /// written just before a power loss may be lost, never torn) for speed.
    pub fn with_durable_writes(mut self, durable: bool) -> Self {
        self.config_mut().durable = durable;
        self
    }

    /// How far apart the wall clocks of the hosts sharing the directory may be: a lock is
    /// taken over only once its expiry plus this tolerance has passed. Default 1 s.
    pub fn with_clock_skew_tolerance(mut self, tolerance: Duration) -> Self {
        self.config_mut().clock_skew_tolerance = tolerance;
        self
    }

    /// How old a lock guard file must be before it is considered left behind by a crashed
    /// process and removed. Guards are held for a few system calls; default 5 s. Must be
    /// far longer than any pause a running process may suffer.
    pub fn with_stale_guard_after(mut self, age: Duration) -> Self {
        self.config_mut().stale_guard_after = age.max(Duration::from_millis(100));
        self
    }

    /// Values up to this many bytes are read on the calling task; larger ones on the
    /// blocking thread pool. `0` moves every read (`load`, `exists`, `stat`) to the
    /// blocking pool, for mounts where a read may stall. Default 64 KiB.
    pub fn with_inline_read_limit(mut self, bytes: usize) -> Self {
        self.config_mut().inline_read_limit = bytes as u64;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.config.root
    }

    /// Whether writes are durable (see [`with_durable_writes`](Self::with_durable_writes)).
    pub fn durable_writes(&self) -> bool {
        self.config.durable
    }

    /// The clock-skew tolerance for lock expiry.
    pub fn clock_skew_tolerance(&self) -> Duration {
        self.config.clock_skew_tolerance
    }

    /// Removes what interrupted operations left behind: temporary files and directories
    /// being deleted older than `older_than`, and stale lock guards. They are never
    /// listed and do no harm, but take space. Returns how many entries were removed.
    /// Pick `older_than` well above the time the slowest write can take (a minute is
    /// plenty on a local disk).
    pub async fn clean_up(&self, older_than: Duration) -> Result<usize> {
        let config = Arc::clone(&self.config);
        blocking(move || config.clean_up(older_than)).await
    }

    fn inline_reads(&self) -> bool {
        self.config.inline_read_limit > 0
    }
}

/// Runs blocking file system work on tokio's blocking pool, or right here when there is
/// no tokio runtime.
async fn blocking<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime
            .spawn_blocking(work)
            .await
            .map_err(|err| Error::backend(BACKEND, err))?,
        Err(_) => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use cert_core::Storage;

    #[test]
    fn debug_prints_the_root_only() {
        let storage = FileStorage::new("/srv/certs")
            .with_durable_writes(false)
            .with_clock_skew_tolerance(Duration::from_millis(250));
        assert_eq!(
            format!("{storage:?}"),
            r#"FileStorage { root: "/srv/certs" }"#
        );
        assert!(!storage.durable_writes());
        assert_eq!(storage.clock_skew_tolerance(), Duration::from_millis(250));
        assert_eq!(storage.root(), Path::new("/srv/certs"));
    }

    #[test]
    fn works_without_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::new(dir.path().join("r"));
        let done = futures_lite_block_on(async {
            storage.store("a/b", b"v").await?;
            storage.load("a/b").await
        });
        assert_eq!(done.unwrap(), b"v");
    }

    /// Both lookup paths (the one-call `openat2` walk and the portable per-directory
    /// check) refuse links and agree on every answer.
    #[tokio::test]
    async fn fast_and_portable_lookups_agree() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("f"), b"outside").unwrap();
        let root = dir.path().join("root");
        let fast = FileStorage::new(&root);
        let portable = FileStorage::new(&root);
        portable
            .config
            .resolver
            .unsupported
            .store(true, std::sync::atomic::Ordering::Relaxed);
        fast.store("a/b/c", b"v").await.unwrap();
        fast.store("file", b"f").await.unwrap();
        symlink(&outside, root.join("a/link")).unwrap();
        symlink(outside.join("f"), root.join("a/b/flink")).unwrap();
        for s in [&fast, &portable] {
            assert_eq!(s.load("a/b/c").await.unwrap(), b"v");
            assert!(s.exists("a/b/c").await.unwrap());
            assert!(s.exists("a/b").await.unwrap());
            assert!(!s.exists("a/x").await.unwrap());
            assert!(!s.exists("file/below").await.unwrap());
            assert!(s.load("a/b").await.unwrap_err().is_not_found());
            assert!(s.load("file/below").await.unwrap_err().is_not_found());
            assert!(!s.stat("a").await.unwrap().is_terminal);
            assert_eq!(s.stat("a/b/c").await.unwrap().size, 1);
            for key in ["a/link/f", "a/b/flink", "a/link"] {
                let err = s.load(key).await.unwrap_err();
                let Error::Backend { source, .. } = &err else {
                    panic!("{key}: {err:?}");
                };
                assert!(
                    matches!(
                        source.downcast_ref::<FileError>(),
                        Some(FileError::Symlink { .. })
                    ),
                    "{key}: {err:?}"
                );
                assert!(s.exists(key).await.is_err(), "{key}");
                assert!(s.stat(key).await.is_err(), "{key}");
            }
        }
    }

    /// A minimal executor for futures that never return `Pending` across real waits.
    fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }
}
