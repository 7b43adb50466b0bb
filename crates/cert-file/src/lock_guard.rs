//! Lock guards: the short-lived `<name>.lock.guard` file, created `O_EXCL`, that admits
//! one process at a time to change a held lease, and the breaking of guards left by
//! crashed processes.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use cert_core::{Error, Result};

use crate::Config;
use crate::error::{BACKEND, FileError, io_failure, is_absent};
use crate::path::OPEN_FLAGS;
use crate::temp::TMP_PREFIX;

/// Suffix of guard files (after the lock file's name).
pub(crate) const GUARD_SUFFIX: &str = ".lock.guard";

/// A held guard; removing it on drop, if it is still ours.
pub(crate) struct Guard {
    path: PathBuf,
    ino: u64,
    taken: Instant,
}

impl Guard {
    /// Whether the guard is young enough that no other process can have judged it stale.
    pub(crate) fn fresh(&self, config: &Config) -> bool {
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

pub(crate) enum GuardTry {
    Taken(Guard),
    Busy,
    NoDir,
}

impl Config {
    /// Tries once to create the guard, breaking a stale one.
    pub(crate) fn try_guard(&self, path: &Path) -> Result<GuardTry> {
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
    pub(crate) fn wait_guard(&self, name: &str, path: &Path) -> Result<Guard> {
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
}

pub(crate) fn guard_too_slow(path: &Path) -> Error {
    Error::unavailable(
        BACKEND,
        FileError::GuardBusy {
            path: path.to_owned(),
        },
    )
}
