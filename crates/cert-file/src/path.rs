//! Paths below the root, walked without following links: the directories on the way to a
//! key checked or created, files opened with `O_NOFOLLOW`, directories flushed.
//!
//! Every function here takes `rel`, a `/`-separated path below the root that has already
//! been validated (a key, or a lock file's path), and never follows a symbolic link inside
//! the root: intermediate directories are checked with `symlink_metadata`, final
//! components are opened with `O_NOFOLLOW`.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use cert_core::{Error, MAX_KEY_LEN, Result};

use crate::Config;
use crate::error::{io_failure, is_absent, not_regular, symlink};

/// Deepest directory nesting a valid key can have; deeper trees are not walked.
pub(crate) const MAX_DEPTH: usize = MAX_KEY_LEN / 2 + 1;
/// Flags for every file this backend opens: never follow a link, never block on a FIFO.
pub(crate) const OPEN_FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;

/// Whether a write attempt finished or must start over because a concurrent delete
/// removed a directory it needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Done,
    Retry,
}

/// Opens a file for reading without following a link or blocking on a FIFO.
pub(crate) fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_FLAGS)
        .open(path)
}

/// Flushes a directory's entries to stable storage.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Config {
    /// The path of `rel` below the root.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Checks the directories on the way to `rel` (every segment but the last): `true`
    /// when all are real directories, `false` when one is missing or is a file, an error
    /// when one is a symbolic link or something stranger.
    pub(crate) fn check_dirs(&self, rel: &str) -> Result<bool> {
        let mut path = PathBuf::with_capacity(self.root.as_os_str().len() + rel.len() + 1);
        path.push(&self.root);
        let mut start = 0;
        for (end, _) in rel.match_indices('/') {
            path.push(&rel[start..end]);
            start = end + 1;
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => return Err(symlink(&path)),
                Ok(meta) if meta.is_file() => return Ok(false),
                Ok(_) => return Err(not_regular(&path)),
                Err(err) if is_absent(&err) => return Ok(false),
                Err(err) => return Err(io_failure("stat", &path, err)),
            }
        }
        Ok(true)
    }

    /// Creates the root with mode 0700 (and any missing parents) if it is missing.
    pub(crate) fn create_root(&self) -> Result<()> {
        match DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
        {
            Ok(()) => {
                if self.durable
                    && let Some(parent) = self.root.parent()
                {
                    let _ = sync_dir(parent);
                }
                Ok(())
            }
            Err(err) => Err(io_failure("create directory", &self.root, err)),
        }
    }

    /// Makes sure every directory on the way to `rel` exists (mode 0700 for those created
    /// here) and none is a link or a file. `key` names the key (or lock) in errors.
    pub(crate) fn make_dirs(&self, rel: &str, key: &str) -> Result<Step> {
        let mut path = PathBuf::with_capacity(self.root.as_os_str().len() + rel.len() + 1);
        path.push(&self.root);
        let mut start = 0;
        for (index, (end, _)) in rel.match_indices('/').enumerate() {
            path.push(&rel[start..end]);
            start = end + 1;
            let mut tries = 0;
            loop {
                tries += 1;
                if tries > 8 {
                    return Ok(Step::Retry);
                }
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_dir() => break,
                    Ok(meta) if meta.file_type().is_symlink() => return Err(symlink(&path)),
                    Ok(meta) if meta.is_file() => {
                        return Err(Error::Conflict {
                            key: key.to_owned(),
                            reason: format!("{} holds a value", &rel[..end]),
                        });
                    }
                    Ok(_) => return Err(not_regular(&path)),
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) if is_absent(&err) => return Ok(Step::Retry),
                    Err(err) => return Err(io_failure("stat", &path, err)),
                }
                match DirBuilder::new().mode(0o700).create(&path) {
                    Ok(()) => {
                        if self.durable
                            && let Some(parent) = path.parent()
                        {
                            sync_dir(parent)
                                .map_err(|err| io_failure("sync directory", parent, err))?;
                        }
                        break;
                    }
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound && index == 0 => {
                        self.create_root()?;
                    }
                    Err(err) if is_absent(&err) => return Ok(Step::Retry),
                    Err(err) => return Err(io_failure("create directory", &path, err)),
                }
            }
        }
        Ok(Step::Done)
    }
}
