//! Lease locks made of files, safe across processes and hosts sharing the directory.
//!
//! Layout, below the root:
//!
//! ```text
//! .certstore-locks/<name>.lock         the lease: format line, token, expiry (unix ms)
//! .certstore-locks/<name>.lock.guard   short-lived, serialises changes to a held lease
//! ```
//!
//! - **Acquire** a free lock: write the lease to a temporary file and `hard_link` it to
//!   `<name>.lock`. The link is atomic create-if-absent: exactly one racer succeeds, and
//!   a lock file is never seen half written.
//! - A lock whose expiry plus the clock-skew tolerance has passed is **taken over** under
//!   the guard: the guard (created `O_EXCL`) admits one process at a time; it re-reads the
//!   lock file and removes it only if it is byte for byte the expired lease it judged,
//!   then links its own lease. A racer that finds the lock free in between links
//!   directly; either way the atomic link lets exactly one win.
//! - **Refresh** and **release** take the guard too, check the token and expiry, and then
//!   replace (rename) or remove the lock file. Nothing changes a lock file without the
//!   guard except the create-if-absent link, so a holder whose lease expired can never
//!   clobber a new holder.
//! - A guard is held for a few system calls. One left by a crashed process is broken once
//!   its modification time is older than the stale-guard age (plus the clock-skew
//!   tolerance): it is renamed aside and removed only if the renamed file is the same
//!   inode that was judged stale; otherwise it is linked back. This relies on no live
//!   process holding a guard for anywhere near the stale age: a holder checks, right
//!   before the step that changes the lock file, that its guard is younger than half
//!   the stale age, and backs off otherwise (a process paused longer than that, like a
//!   lease holder paused past its TTL, is treated as gone).
//! - **Fenced writes** take the guard too, check the token and expiry, and then write the
//!   value (temporary file and rename) or delete the key before letting the guard go.
//!   Since nothing changes a live lock file without the guard, no takeover can come
//!   between the check and the write, except after this process paused, between its
//!   last guard-age check and the rename, for longer than half the stale-guard age while
//!   its lease ran out.
//! - Lock directories (for names with `/`) are kept when their locks are released, so
//!   an acquisition never races with a directory being removed.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cert_core::{Error, Lease, LockToken, Locker, Result, validate_key};

use crate::error::{io_failure, is_absent};
use crate::lock_file::{Current, LockPaths, encode, millis, now_ms, read_lock};
use crate::lock_guard::{GuardTry, guard_too_slow};
use crate::path::Step;
use crate::temp::TempFile;
use crate::{Config, FileStorage, LEFTOVER_GRACE, blocking};

/// How many times one acquisition attempt re-reads after racing with a release.
const ATTEMPTS: u32 = 8;

/// What trying to link a new lease into place did.
enum Link {
    Created,
    Exists,
    Retry,
}

impl Config {
    fn lock_expired(&self, current: &Current) -> bool {
        match current.expires_ms {
            Some(expires) => now_ms() > expires.saturating_add(millis(self.clock_skew_tolerance)),
            None => {
                tracing::warn!("malformed lock file treated as expired");
                true
            }
        }
    }

    /// One attempt to take the lock `name` for `ttl`.
    pub(crate) fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        let started = Instant::now();
        let paths = LockPaths::new(self, name);
        let token = LockToken::generate();
        let content = encode(&token, now_ms().saturating_add(millis(ttl)));
        for _ in 0..ATTEMPTS {
            if let Some(current) = read_lock(&paths.file)? {
                if !self.lock_expired(&current) {
                    return Ok(None);
                }
                return Ok(self
                    .take_over(name, &paths, &current, &content)?
                    .then(|| Lease::new(name, token, ttl, started)));
            }
            match self.link_new(name, &paths, &content)? {
                Link::Created => return Ok(Some(Lease::new(name, token, ttl, started))),
                Link::Exists | Link::Retry => {}
            }
        }
        Ok(None)
    }

    /// Writes `content` to a temporary file and links it to the lock file.
    fn link_new(&self, name: &str, paths: &LockPaths, content: &str) -> Result<Link> {
        if self.make_dirs(&paths.rel, name)? == Step::Retry {
            return Ok(Link::Retry);
        }
        let (mut file, temp) = match TempFile::create(&paths.dir) {
            Ok(created) => created,
            Err(err) if is_absent(&err) => return Ok(Link::Retry),
            Err(err) => return Err(io_failure("create", &paths.dir, err)),
        };
        file.write_all(content.as_bytes())
            .map_err(|err| io_failure("write", &temp.path, err))?;
        drop(file);
        match fs::hard_link(&temp.path, &paths.file) {
            Ok(()) => Ok(Link::Created),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                // Over NFS a retransmitted link can report EEXIST although it worked:
                // the temporary file then has two names.
                if fs::metadata(&temp.path).is_ok_and(|meta| meta.nlink() == 2)
                    && read_lock(&paths.file)?.is_some_and(|cur| cur.raw == content.as_bytes())
                {
                    return Ok(Link::Created);
                }
                Ok(Link::Exists)
            }
            Err(err) if is_absent(&err) => Ok(Link::Retry),
            Err(err) => Err(io_failure("link", &paths.file, err)),
        }
    }

    /// Takes over the expired lease `current` under the guard.
    fn take_over(
        &self,
        name: &str,
        paths: &LockPaths,
        current: &Current,
        content: &str,
    ) -> Result<bool> {
        let guard = match self.try_guard(&paths.guard)? {
            GuardTry::Taken(guard) => guard,
            GuardTry::Busy | GuardTry::NoDir => return Ok(false),
        };
        match read_lock(&paths.file)? {
            Some(now) if now.raw == current.raw => {
                if !guard.fresh(self) {
                    return Ok(false);
                }
                match fs::remove_file(&paths.file) {
                    Ok(()) => {}
                    Err(err) if is_absent(&err) => {}
                    Err(err) => return Err(io_failure("remove", &paths.file, err)),
                }
            }
            // Refreshed, released and retaken, or taken over by someone else.
            Some(_) => return Ok(false),
            None => {}
        }
        let won = matches!(self.link_new(name, paths, content)?, Link::Created);
        drop(guard);
        Ok(won)
    }

    /// Removes the lock file of `name` if its lease has expired (past the clock-skew
    /// tolerance), under the guard and only if it is still byte for byte the expired lease
    /// judged; returns whether it removed one.
    fn remove_if_expired(&self, name: &str) -> Result<bool> {
        let paths = LockPaths::new(self, name);
        let Some(current) = read_lock(&paths.file)? else {
            return Ok(false);
        };
        if !self.lock_expired(&current) {
            return Ok(false);
        }
        let guard = match self.try_guard(&paths.guard)? {
            GuardTry::Taken(guard) => guard,
            GuardTry::Busy | GuardTry::NoDir => return Ok(false),
        };
        let removed = match read_lock(&paths.file)? {
            Some(now) if now.raw == current.raw && guard.fresh(self) => {
                match fs::remove_file(&paths.file) {
                    Ok(()) => true,
                    Err(err) if is_absent(&err) => false,
                    Err(err) => return Err(io_failure("remove", &paths.file, err)),
                }
            }
            _ => false,
        };
        drop(guard);
        Ok(removed)
    }

    /// Removes every expired lock file below the lock directory; returns how many.
    pub(crate) fn clean_expired_locks(&self) -> Result<usize> {
        let mut removed = 0;
        for name in self.lock_names()? {
            if self.remove_if_expired(&name)? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Checks, under the guard, that `lease` is the live holder.
    fn check_holder(&self, lease: &Lease, paths: &LockPaths) -> Result<()> {
        let lost = || Error::LockLost {
            name: lease.name().to_owned(),
        };
        let current = read_lock(&paths.file)?.ok_or_else(lost)?;
        if current.token.as_deref() != Some(lease.token().as_str()) {
            return Err(lost());
        }
        match current.expires_ms {
            Some(expires) if expires > now_ms() => Ok(()),
            _ => Err(lost()),
        }
    }

    /// Runs `write` under the guard of `lease`'s lock, once the lock file is seen to hold
    /// the lease's token and an expiry still ahead; [`Error::LockLost`] otherwise, with
    /// nothing written.
    ///
    /// Nothing changes a lock file held by a live lease without its guard, so while the
    /// guard is held here no takeover can happen. The guard is trusted only while it is
    /// younger than half the stale-guard age (older, another process may break it), so
    /// `write` gets a check to call right before its commit step (the rename or remove):
    /// it fails, retryably, when the guard has grown too old.
    pub(crate) fn fenced<T>(
        &self,
        lease: &Lease,
        write: impl FnOnce(&dyn Fn() -> Result<()>) -> Result<T>,
    ) -> Result<T> {
        let paths = LockPaths::new(self, lease.name());
        if !self.check_dirs(&paths.rel)? {
            return Err(Error::LockLost {
                name: lease.name().to_owned(),
            });
        }
        let guard = self.wait_guard(lease.name(), &paths.guard)?;
        self.check_holder(lease, &paths)?;
        let guarded = || {
            if guard.fresh(self) {
                Ok(())
            } else {
                Err(guard_too_slow(&paths.guard))
            }
        };
        let result = write(&guarded);
        drop(guard);
        result
    }

    /// Extends `lease` to `ttl` from now.
    pub(crate) fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let started = Instant::now();
        let expires = now_ms().saturating_add(millis(ttl));
        let paths = LockPaths::new(self, lease.name());
        if !self.check_dirs(&paths.rel)? {
            return Err(Error::LockLost {
                name: lease.name().to_owned(),
            });
        }
        let guard = self.wait_guard(lease.name(), &paths.guard)?;
        self.check_holder(lease, &paths)?;
        let (mut file, mut temp) =
            TempFile::create(&paths.dir).map_err(|err| io_failure("create", &paths.dir, err))?;
        file.write_all(encode(lease.token(), expires).as_bytes())
            .map_err(|err| io_failure("write", &temp.path, err))?;
        drop(file);
        if !guard.fresh(self) {
            return Err(guard_too_slow(&paths.guard));
        }
        fs::rename(&temp.path, &paths.file)
            .map_err(|err| io_failure("rename", &paths.file, err))?;
        temp.disarm();
        drop(guard);
        Ok(lease.renewed(ttl, started))
    }

    /// Releases `lease`.
    pub(crate) fn release(&self, lease: &Lease) -> Result<()> {
        let paths = LockPaths::new(self, lease.name());
        if !self.check_dirs(&paths.rel)? {
            return Err(Error::LockLost {
                name: lease.name().to_owned(),
            });
        }
        let guard = self.wait_guard(lease.name(), &paths.guard)?;
        self.check_holder(lease, &paths)?;
        if !guard.fresh(self) {
            return Err(guard_too_slow(&paths.guard));
        }
        match fs::remove_file(&paths.file) {
            Ok(()) => {}
            Err(err) if is_absent(&err) => {
                return Err(Error::LockLost {
                    name: lease.name().to_owned(),
                });
            }
            Err(err) => return Err(io_failure("remove", &paths.file, err)),
        }
        drop(guard);
        Ok(())
    }
}

#[async_trait]
impl Locker for FileStorage {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        validate_key(name)?;
        let config = Arc::clone(&self.config);
        let name = name.to_owned();
        blocking(move || config.try_acquire(&name, ttl)).await
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        validate_key(lease.name())?;
        let config = Arc::clone(&self.config);
        let lease = lease.clone();
        blocking(move || config.refresh(&lease, ttl)).await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        validate_key(lease.name())?;
        let config = Arc::clone(&self.config);
        let lease = lease.clone();
        blocking(move || config.release(&lease)).await
    }

    /// Removes expired lock files and returns how many. Also removes, uncounted but
    /// logged, the temporary files and half-deleted directories older than
    /// [`LEFTOVER_GRACE`] that interrupted operations left anywhere below the root, so
    /// the cleaning that runs anyway keeps crash leftovers from piling up.
    async fn clean_expired_locks(&self) -> Result<usize> {
        let config = Arc::clone(&self.config);
        blocking(move || {
            let removed = config.clean_expired_locks()?;
            // A failure here (an unreadable directory) is not the locks' business: they
            // were cleaned, and the next run tries the leftovers again.
            match config.clean_up(LEFTOVER_GRACE) {
                Ok(0) => {}
                Ok(count) => tracing::info!(
                    count,
                    root = %config.root.display(),
                    "removed temporary files and directories left by interrupted writes"
                ),
                Err(err) => tracing::warn!(
                    error = %err,
                    root = %config.root.display(),
                    "could not remove what interrupted writes left behind"
                ),
            }
            Ok(removed)
        })
        .await
    }

    fn lock_admin(&self) -> Option<&dyn cert_core::LockAdmin> {
        Some(self)
    }
}
