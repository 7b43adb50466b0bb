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
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cert_core::{Error, Lease, LockToken, Result};

use crate::Config;
use crate::error::{BACKEND, FileError, io_failure, is_absent};
use crate::fs::{OPEN_FLAGS, Step, TMP_PREFIX, TempFile, open_nofollow};

/// The directory below the root that holds lock files.
pub(crate) const LOCK_DIR: &str = ".certstore-locks";
/// Suffix of lock files.
const LOCK_SUFFIX: &str = ".lock";
/// Suffix of guard files (after the lock file's name).
pub(crate) const GUARD_SUFFIX: &str = ".lock.guard";
/// First line of a lock file.
const FORMAT: &str = "certstore-lock 1";
/// Lock files are tiny; anything longer is not ours.
const MAX_LOCK_FILE: u64 = 4096;
/// How many times one acquisition attempt re-reads after racing with a release.
const ATTEMPTS: u32 = 8;

/// The paths of one lock.
struct LockPaths {
    /// `.certstore-locks/<name>.lock`, relative to the root.
    rel: String,
    file: PathBuf,
    guard: PathBuf,
    dir: PathBuf,
}

impl LockPaths {
    fn new(config: &Config, name: &str) -> Self {
        let rel = format!("{LOCK_DIR}/{name}{LOCK_SUFFIX}");
        let file = config.path(&rel);
        let guard = config.path(&format!("{LOCK_DIR}/{name}{GUARD_SUFFIX}"));
        let dir = file.parent().unwrap_or(&config.root).to_owned();
        LockPaths {
            rel,
            file,
            guard,
            dir,
        }
    }
}

/// A lock file as read: its exact bytes, and the token and expiry if it parses.
struct Current {
    raw: Vec<u8>,
    token: Option<String>,
    expires_ms: Option<u64>,
}

fn encode(token: &LockToken, expires_ms: u64) -> String {
    format!("{FORMAT}\ntoken {token}\nexpires {expires_ms}\n")
}

fn decode(raw: Vec<u8>) -> Current {
    let mut token = None;
    let mut expires_ms = None;
    if let Ok(text) = std::str::from_utf8(&raw) {
        let mut lines = text.lines();
        if lines.next() == Some(FORMAT) {
            for line in lines {
                if let Some(value) = line.strip_prefix("token ") {
                    token = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("expires ") {
                    expires_ms = value.parse().ok();
                }
            }
        }
    }
    Current {
        raw,
        token,
        expires_ms,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Reads a lock file; `None` when there is none.
fn read_lock(path: &Path) -> Result<Option<Current>> {
    let file = match open_nofollow(path) {
        Ok(file) => file,
        Err(err) if is_absent(&err) => return Ok(None),
        Err(err) => return Err(io_failure("open", path, err)),
    };
    let mut raw = Vec::with_capacity(128);
    file.take(MAX_LOCK_FILE)
        .read_to_end(&mut raw)
        .map_err(|err| io_failure("read", path, err))?;
    Ok(Some(decode(raw)))
}

/// What trying to link a new lease into place did.
enum Link {
    Created,
    Exists,
    Retry,
}

/// A held guard; removing it on drop, if it is still ours.
struct Guard {
    path: PathBuf,
    ino: u64,
    taken: Instant,
}

impl Guard {
    /// Whether the guard is young enough that no other process can have judged it stale.
    fn fresh(&self, config: &Config) -> bool {
        self.taken.elapsed() < config.stale_guard_after / 2
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if fs::symlink_metadata(&self.path).is_ok_and(|meta| meta.ino() == self.ino) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

enum GuardTry {
    Taken(Guard),
    Busy,
    NoDir,
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

    /// Tries once to create the guard, breaking a stale one.
    fn try_guard(&self, path: &Path) -> Result<GuardTry> {
        for _ in 0..3 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(OPEN_FLAGS)
                .open(path)
            {
                Ok(file) => {
                    let ino = file
                        .metadata()
                        .map_err(|err| io_failure("stat", path, err))?
                        .ino();
                    return Ok(GuardTry::Taken(Guard {
                        path: path.to_owned(),
                        ino,
                        taken: Instant::now(),
                    }));
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    if !self.break_guard_if_stale(path) {
                        return Ok(GuardTry::Busy);
                    }
                }
                Err(err) if is_absent(&err) => return Ok(GuardTry::NoDir),
                Err(err) => return Err(io_failure("create", path, err)),
            }
        }
        Ok(GuardTry::Busy)
    }

    /// Waits for the guard (refresh and release must not give up on a briefly held one).
    fn wait_guard(&self, name: &str, path: &Path) -> Result<Guard> {
        let deadline = Instant::now()
            + (self.stale_guard_after + self.clock_skew_tolerance) * 2
            + Duration::from_secs(1);
        let mut pause = Duration::from_micros(200);
        loop {
            match self.try_guard(path)? {
                GuardTry::Taken(guard) => return Ok(guard),
                GuardTry::NoDir => {
                    return Err(Error::LockLost {
                        name: name.to_owned(),
                    });
                }
                GuardTry::Busy if Instant::now() >= deadline => {
                    return Err(Error::unavailable(
                        BACKEND,
                        FileError::GuardBusy {
                            path: path.to_owned(),
                        },
                    ));
                }
                GuardTry::Busy => {
                    std::thread::sleep(pause.mul_f64(0.5 + fastrand::f64()));
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
            }
        }
    }

    /// Removes the guard at `path` if it is stale; `true` when it is gone (removed here
    /// or by someone else), so creating it may be tried again.
    pub(crate) fn break_guard_if_stale(&self, path: &Path) -> bool {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(err) => return is_absent(&err),
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok())
            .unwrap_or_default();
        if age <= self.stale_guard_after + self.clock_skew_tolerance {
            return false;
        }
        let dir = path.parent().unwrap_or(&self.root);
        let aside = dir.join(format!("{TMP_PREFIX}{:016x}", fastrand::u64(..)));
        match fs::rename(path, &aside) {
            Ok(()) => {}
            Err(err) => return is_absent(&err),
        }
        let moved = fs::symlink_metadata(&aside).map(|m| m.ino()).ok();
        if moved != Some(meta.ino()) {
            // Another process broke the stale guard and took a fresh one in between:
            // put theirs back.
            if fs::hard_link(&aside, path).is_err() {
                tracing::warn!(path = %path.display(), "could not restore a fresh lock guard");
            }
            let _ = fs::remove_file(&aside);
            return false;
        }
        tracing::warn!(path = %path.display(), "removed a stale lock guard");
        let _ = fs::remove_file(&aside);
        true
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

/// What an operator sees of one lock file.
pub(crate) struct Listed {
    pub(crate) name: String,
    pub(crate) token: String,
    pub(crate) modified: Option<SystemTime>,
    pub(crate) expires_in: Option<Duration>,
}

impl Config {
    /// The names of every lock file below the lock directory, sorted.
    fn lock_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut dirs = vec![(self.path(LOCK_DIR), String::new())];
        while let Some((dir, prefix)) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(err) if is_absent(&err) => continue,
                Err(err) => return Err(io_failure("read_dir", &dir, err)),
            };
            for entry in entries {
                let entry = entry.map_err(|err| io_failure("read_dir", &dir, err))?;
                let (Ok(file_name), Ok(kind)) =
                    (entry.file_name().into_string(), entry.file_type())
                else {
                    continue;
                };
                let rel = if prefix.is_empty() {
                    file_name.clone()
                } else {
                    format!("{prefix}/{file_name}")
                };
                if kind.is_dir() {
                    dirs.push((entry.path(), rel));
                } else if kind.is_file()
                    && !file_name.starts_with(TMP_PREFIX)
                    && let Some(name) = rel.strip_suffix(LOCK_SUFFIX)
                    && cert_core::validate_key(name).is_ok()
                {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every lock file with its holder and expiry (expired ones included until cleaned).
    pub(crate) fn list_locks(&self) -> Result<Vec<Listed>> {
        let now = now_ms();
        let mut out = Vec::new();
        for name in self.lock_names()? {
            let paths = LockPaths::new(self, &name);
            let Some(current) = read_lock(&paths.file)? else {
                continue; // released while listing
            };
            let modified = fs::symlink_metadata(&paths.file)
                .and_then(|meta| meta.modified())
                .ok();
            out.push(Listed {
                name,
                token: current.token.unwrap_or_default(),
                modified,
                expires_in: current
                    .expires_ms
                    .map(|expires| Duration::from_millis(expires.saturating_sub(now))),
            });
        }
        Ok(out)
    }

    /// Removes the lock file of `name` whoever holds it, under its guard; `false` when
    /// there is none.
    pub(crate) fn force_release(&self, name: &str) -> Result<bool> {
        let paths = LockPaths::new(self, name);
        if read_lock(&paths.file)?.is_none() {
            return Ok(false);
        }
        let guard = match self.wait_guard(name, &paths.guard) {
            Ok(guard) => guard,
            Err(Error::LockLost { .. }) => return Ok(false),
            Err(err) => return Err(err),
        };
        let removed = match fs::remove_file(&paths.file) {
            Ok(()) => true,
            Err(err) if is_absent(&err) => false,
            Err(err) => return Err(io_failure("remove", &paths.file, err)),
        };
        drop(guard);
        Ok(removed)
    }
}

fn guard_too_slow(path: &Path) -> Error {
    Error::unavailable(
        BACKEND,
        FileError::GuardBusy {
            path: path.to_owned(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_files_round_trip() {
        let token = LockToken::generate();
        let text = encode(&token, 1234);
        let current = decode(text.into_bytes());
        assert_eq!(current.token.as_deref(), Some(token.as_str()));
        assert_eq!(current.expires_ms, Some(1234));
    }

    #[test]
    fn garbage_does_not_parse() {
        let current = decode(b"token x\nexpires 5\n".to_vec());
        assert!(current.token.is_none() && current.expires_ms.is_none());
        let current = decode(vec![0xff, 0xfe]);
        assert!(current.token.is_none());
    }
}
