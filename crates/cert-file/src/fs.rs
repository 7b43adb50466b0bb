//! The blocking file system work behind [`FileStorage`](crate::FileStorage): walking keys
//! without following links, atomic writes, listing and deleting.
//!
//! Every function here takes `rel`, a `/`-separated path below the root that has already
//! been validated (a key, or a lock file's path), and never follows a symbolic link inside
//! the root: intermediate directories are checked with `symlink_metadata`, final
//! components are opened with `O_NOFOLLOW`.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cert_core::{
    Error, KeyInfo, MAX_KEY_LEN, MAX_SEGMENT_LEN, MAX_VALUE_LEN, RESERVED_PREFIX, Result,
};

use crate::Config;
use crate::error::{BACKEND, FileError, io_error, io_failure, is_absent, not_regular, symlink};
use crate::resolve::Probe;

/// Name prefix of temporary files (values and lock files being written).
pub(crate) const TMP_PREFIX: &str = ".certstore-tmp-";
/// Name prefix of directories being deleted (moved aside first, then removed).
pub(crate) const DEL_PREFIX: &str = ".certstore-del-";
/// How many times a write is retried when concurrent deletes prune its directories.
const WRITE_ATTEMPTS: u32 = 16;
/// Deepest directory nesting a valid key can have; deeper trees are not walked.
const MAX_DEPTH: usize = MAX_KEY_LEN / 2 + 1;
/// Flags for every file this backend opens: never follow a link, never block on a FIFO.
pub(crate) const OPEN_FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;

/// Whether a write attempt finished or must start over because a concurrent delete
/// removed a directory it needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Done,
    Retry,
}

/// A temporary file that is removed when dropped, unless it was renamed into place.
pub(crate) struct TempFile {
    pub(crate) path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Creates a fresh temporary file in `dir` (`O_EXCL`, mode 0600).
    pub(crate) fn create(dir: &Path) -> io::Result<(File, TempFile)> {
        let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
        for _ in 0..8 {
            let path = dir.join(format!("{TMP_PREFIX}{:016x}", fastrand::u64(..)));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(OPEN_FLAGS)
                .open(&path)
            {
                Ok(file) => return Ok((file, TempFile { path, armed: true })),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last = err,
                Err(err) => return Err(err),
            }
        }
        Err(last)
    }

    /// Forgets the file: it was renamed into place.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Whether a directory entry's name can be a key segment this backend lists. Reserved
/// names (temporary files, the lock directory) and names no valid key could have are
/// skipped.
pub(crate) fn listable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SEGMENT_LEN
        && !name.starts_with(RESERVED_PREFIX)
        && !name.chars().any(|c| c.is_control() || c == '\\')
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

/// Whether `dir` holds at least one listable value, at any depth. Unreadable or vanished
/// subdirectories count as empty.
pub(crate) fn has_keys(dir: &Path, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(listable) {
            continue;
        }
        match entry.file_type() {
            Ok(kind) if kind.is_file() => return true,
            Ok(kind) if kind.is_dir() => subdirs.push(entry.path()),
            _ => {}
        }
    }
    subdirs.iter().any(|sub| has_keys(sub, depth + 1))
}

/// Removes `dir` if all it holds, at any depth, is directories and the leftovers of
/// interrupted operations (temporary files, half-deleted directories). Fails, having
/// removed at most some of those leftovers, as soon as it meets anything else: a value
/// (maybe renamed into place by a concurrent writer since [`has_keys`] looked), or a
/// file that is not this backend's.
///
/// A temporary file removed here may belong to a writer still busy below `dir`; its
/// rename then finds the file gone and the writer starts over, seeing the new value
/// where its directory was.
fn remove_leftover_dir(dir: &Path, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::ErrorKind::DirectoryNotEmpty.into());
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_str().unwrap_or_default();
        let kind = entry.file_type()?;
        let removed = if name.starts_with(TMP_PREFIX) && kind.is_file() {
            fs::remove_file(entry.path())
        } else if name.starts_with(DEL_PREFIX) && kind.is_dir() {
            fs::remove_dir_all(entry.path())
        } else if listable(name) && kind.is_dir() {
            remove_leftover_dir(&entry.path(), depth + 1)
        } else {
            // A value, a link, or something this backend never creates: keep it, and
            // the directory with it.
            return Err(io::ErrorKind::DirectoryNotEmpty.into());
        };
        // Gone already: removed by a concurrent cleaning or delete.
        if let Err(err) = removed
            && !is_absent(&err)
        {
            return Err(err);
        }
    }
    fs::remove_dir(dir)
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

    /// Stores `value` at `key`: temporary file, write, fsync, rename, fsync directory.
    pub(crate) fn store(&self, key: &str, value: &[u8]) -> Result<()> {
        self.store_checked(key, value, &|| Ok(()))
    }

    /// Like [`store`](Self::store), calling `commit_ok` right before the rename that makes
    /// the value visible, and giving up with its error (nothing changed) when it fails.
    pub(crate) fn store_checked(
        &self,
        key: &str,
        value: &[u8],
        commit_ok: &dyn Fn() -> Result<()>,
    ) -> Result<()> {
        let path = self.path(key);
        let parent = path.parent().unwrap_or(&self.root).to_owned();
        for _ in 0..WRITE_ATTEMPTS {
            if self.try_store(key, &path, &parent, value, commit_ok)? == Step::Done {
                return Ok(());
            }
        }
        Err(Error::backend(
            BACKEND,
            FileError::Contended {
                path,
                attempts: WRITE_ATTEMPTS,
            },
        ))
    }

    fn try_store(
        &self,
        key: &str,
        path: &Path,
        parent: &Path,
        value: &[u8],
        commit_ok: &dyn Fn() -> Result<()>,
    ) -> Result<Step> {
        if self.make_dirs(key, key)? == Step::Retry {
            return Ok(Step::Retry);
        }
        let (mut file, mut temp) = match TempFile::create(parent) {
            Ok(created) => created,
            Err(err) if err.kind() == io::ErrorKind::NotFound && parent == self.root => {
                self.create_root()?;
                return Ok(Step::Retry);
            }
            Err(err) if is_absent(&err) => return Ok(Step::Retry),
            Err(err) => return Err(io_failure("create", parent, err)),
        };
        file.write_all(value)
            .map_err(|err| io_failure("write", &temp.path, err))?;
        if self.durable {
            file.sync_data()
                .map_err(|err| io_failure("sync", &temp.path, err))?;
        }
        drop(file);
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_file() => {}
            Ok(meta) if meta.is_dir() => {
                // Only a leftover directory without keys may be replaced by a value: one
                // holding nothing but empty directories and what interrupted writes left.
                if has_keys(path, 0)
                    || remove_leftover_dir(path, 0).is_err_and(|err| !is_absent(&err))
                {
                    return Err(Error::Conflict {
                        key: key.to_owned(),
                        reason: "keys exist below it".into(),
                    });
                }
            }
            Ok(meta) if meta.file_type().is_symlink() => return Err(symlink(path)),
            Ok(_) => return Err(not_regular(path)),
            Err(err) if is_absent(&err) => {}
            Err(err) => return Err(io_failure("stat", path, err)),
        }
        commit_ok()?;
        match fs::rename(&temp.path, path) {
            Ok(()) => temp.disarm(),
            // A concurrent delete of a prefix above took our temporary file with it.
            Err(err) if is_absent(&err) => return Ok(Step::Retry),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::IsADirectory | io::ErrorKind::DirectoryNotEmpty
                ) =>
            {
                return Err(Error::Conflict {
                    key: key.to_owned(),
                    reason: "keys exist below it".into(),
                });
            }
            Err(err) => return Err(io_failure("rename", path, err)),
        }
        if self.durable {
            sync_dir(parent).map_err(|err| io_failure("sync directory", parent, err))?;
        }
        Ok(Step::Done)
    }

    /// Opens the value at `key` and returns it with its size.
    pub(crate) fn open_value(&self, key: &str) -> Result<(File, u64)> {
        let (file, path) = match self.resolver.open_read(&self.root, key) {
            Some((opened, path)) => (opened, path),
            None => {
                if !self.check_dirs(key)? {
                    return Err(Error::not_found(key));
                }
                let path = self.path(key);
                (open_nofollow(&path), path)
            }
        };
        let file = file.map_err(|err| io_error(key, "open", &path, err))?;
        let meta = file
            .metadata()
            .map_err(|err| io_error(key, "stat", &path, err))?;
        if meta.is_dir() {
            return Err(Error::not_found(key));
        }
        if !meta.is_file() {
            return Err(not_regular(&path));
        }
        if meta.len() > MAX_VALUE_LEN as u64 {
            return Err(Error::corrupt(
                key,
                format!(
                    "{} is {} bytes, more than any value can be",
                    path.display(),
                    meta.len()
                ),
            ));
        }
        Ok((file, meta.len()))
    }

    /// Reads an opened value.
    pub(crate) fn read_value(&self, key: &str, file: File, size: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
        // One byte more than the limit tells a file that grew past it.
        file.take(MAX_VALUE_LEN as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|err| io_error(key, "read", &self.path(key), err))?;
        if buf.len() > MAX_VALUE_LEN {
            return Err(Error::corrupt(key, "file grew past the value size limit"));
        }
        Ok(buf)
    }

    /// Whether `key` holds a value or has values below it.
    pub(crate) fn exists(&self, key: &str) -> Result<bool> {
        if let Some(probe) = self.resolver.probe(&self.root, key) {
            return match probe.map_err(|err| io_error(key, "open", &self.path(key), err))? {
                Probe::Absent => Ok(false),
                Probe::Dir(_, path) => Ok(has_keys(&path, 0)),
                Probe::Other(meta, _) if meta.is_file() => Ok(true),
                Probe::Other(meta, path) if meta.file_type().is_symlink() => Err(symlink(&path)),
                Probe::Other(_, path) => Err(not_regular(&path)),
            };
        }
        if !self.check_dirs(key)? {
            return Ok(false);
        }
        let path = self.path(key);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(true),
            Ok(meta) if meta.is_dir() => Ok(has_keys(&path, 0)),
            Ok(meta) if meta.file_type().is_symlink() => Err(symlink(&path)),
            Ok(_) => Err(not_regular(&path)),
            Err(err) if is_absent(&err) => Ok(false),
            Err(err) => Err(io_error(key, "stat", &path, err)),
        }
    }

    /// Describes `key`.
    pub(crate) fn stat(&self, key: &str) -> Result<KeyInfo> {
        let (meta, path) = match self.resolver.probe(&self.root, key) {
            Some(probe) => {
                match probe.map_err(|err| io_error(key, "open", &self.path(key), err))? {
                    Probe::Absent => return Err(Error::not_found(key)),
                    Probe::Dir(dir, path) => {
                        let meta = dir
                            .metadata()
                            .map_err(|err| io_error(key, "stat", &path, err))?;
                        (meta, path)
                    }
                    Probe::Other(meta, path) => (meta, path),
                }
            }
            None => {
                if !self.check_dirs(key)? {
                    return Err(Error::not_found(key));
                }
                let path = self.path(key);
                let meta =
                    fs::symlink_metadata(&path).map_err(|err| io_error(key, "stat", &path, err))?;
                (meta, path)
            }
        };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if meta.is_file() {
            Ok(KeyInfo::terminal(key, meta.len(), modified))
        } else if meta.is_dir() {
            if has_keys(&path, 0) {
                Ok(KeyInfo::prefix(key, modified))
            } else {
                Err(Error::not_found(key))
            }
        } else if meta.file_type().is_symlink() {
            Err(symlink(&path))
        } else {
            Err(not_regular(&path))
        }
    }

    /// Deletes `key` and everything below it, then prunes parents left empty.
    pub(crate) fn delete(&self, key: &str) -> Result<()> {
        self.delete_checked(key, &|| Ok(()))
    }

    /// Like [`delete`](Self::delete), calling `commit_ok` right before the remove or
    /// rename that makes the key disappear, and giving up with its error (nothing changed)
    /// when it fails.
    pub(crate) fn delete_checked(
        &self,
        key: &str,
        commit_ok: &dyn Fn() -> Result<()>,
    ) -> Result<()> {
        if !self.check_dirs(key)? {
            return Err(Error::not_found(key));
        }
        let path = self.path(key);
        let parent = path.parent().unwrap_or(&self.root).to_owned();
        let meta = fs::symlink_metadata(&path).map_err(|err| io_error(key, "stat", &path, err))?;
        if meta.is_file() {
            commit_ok()?;
            fs::remove_file(&path).map_err(|err| io_error(key, "remove", &path, err))?;
        } else if meta.is_dir() {
            if !has_keys(&path, 0) {
                return Err(Error::not_found(key));
            }
            // Move the tree aside in one atomic rename, so the prefix disappears at once
            // and a concurrent store below it starts over in a fresh directory.
            let grave = parent.join(format!("{DEL_PREFIX}{:016x}", fastrand::u64(..)));
            commit_ok()?;
            fs::rename(&path, &grave).map_err(|err| io_error(key, "rename", &path, err))?;
            if let Err(err) = fs::remove_dir_all(&grave) {
                tracing::warn!(path = %grave.display(), error = %err, "could not remove a deleted directory; it stays hidden");
            }
        } else if meta.file_type().is_symlink() {
            return Err(symlink(&path));
        } else {
            return Err(not_regular(&path));
        }
        if self.durable {
            sync_dir(&parent).map_err(|err| io_failure("sync directory", &parent, err))?;
        }
        self.prune(key);
        Ok(())
    }

    /// Removes the parent directories of `rel` that became empty, deepest first, up to
    /// (not including) the root. Stops at the first one that is not empty.
    fn prune(&self, rel: &str) {
        let mut rel = rel;
        while let Some((up, _)) = rel.rsplit_once('/') {
            if fs::remove_dir(self.path(up)).is_err() {
                break;
            }
            rel = up;
        }
    }

    /// Lists `prefix` (see [`Storage::list`](cert_core::Storage::list)).
    pub(crate) fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        let dir = if prefix.is_empty() {
            self.root.clone()
        } else {
            if !self.check_dirs(prefix)? {
                return Ok(Vec::new());
            }
            let path = self.path(prefix);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => path,
                Ok(meta) if meta.file_type().is_symlink() => return Err(symlink(&path)),
                Ok(_) => return Ok(Vec::new()),
                Err(err) if is_absent(&err) => return Ok(Vec::new()),
                Err(err) => return Err(io_failure("stat", &path, err)),
            }
        };
        let base = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let mut out = Vec::new();
        if recursive {
            let mut stack = vec![(dir, base)];
            while let Some((dir, base)) = stack.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    // Removed by a concurrent delete since it was seen.
                    Err(err) if is_absent(&err) => continue,
                    Err(err) => return Err(io_failure("read directory", &dir, err)),
                };
                for entry in entries {
                    let entry = match entry {
                        Ok(entry) => entry,
                        Err(err) if is_absent(&err) => continue,
                        Err(err) => return Err(io_failure("read directory", &dir, err)),
                    };
                    let name = entry.file_name();
                    let Some(name) = name.to_str().filter(|name| listable(name)) else {
                        continue;
                    };
                    if base.len() + name.len() > MAX_KEY_LEN {
                        continue;
                    }
                    match entry.file_type() {
                        Ok(kind) if kind.is_file() => out.push(format!("{base}{name}")),
                        Ok(kind) if kind.is_dir() => {
                            stack.push((entry.path(), format!("{base}{name}/")));
                        }
                        _ => {}
                    }
                }
            }
        } else {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(err) if is_absent(&err) => return Ok(Vec::new()),
                Err(err) => return Err(io_failure("read directory", &dir, err)),
            };
            for entry in entries {
                let entry = entry.map_err(|err| io_failure("read directory", &dir, err))?;
                let name = entry.file_name();
                let Some(name) = name.to_str().filter(|name| listable(name)) else {
                    continue;
                };
                if base.len() + name.len() > MAX_KEY_LEN {
                    continue;
                }
                match entry.file_type() {
                    Ok(kind) if kind.is_file() => out.push(format!("{base}{name}")),
                    Ok(kind) if kind.is_dir() && has_keys(&entry.path(), 1) => {
                        out.push(format!("{base}{name}"));
                    }
                    _ => {}
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Removes temporary files and half-deleted directories older than `older_than` from
    /// the whole tree (lock directory included), and breaks stale lock guards. Returns how
    /// many entries were removed.
    pub(crate) fn clean_up(&self, older_than: Duration) -> Result<usize> {
        let now = SystemTime::now();
        let old = |path: &Path| {
            fs::symlink_metadata(path)
                .and_then(|meta| meta.modified())
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .is_some_and(|age| age > older_than)
        };
        let mut removed = 0;
        let mut stack = vec![(self.root.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                continue;
            }
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(err) if is_absent(&err) => continue,
                Err(err) => return Err(io_failure("read directory", &dir, err)),
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let path = entry.path();
                if name.starts_with(TMP_PREFIX) && !kind.is_dir() && old(&path) {
                    if fs::remove_file(&path).is_ok() {
                        removed += 1;
                    }
                } else if name.starts_with(DEL_PREFIX) && kind.is_dir() && old(&path) {
                    if fs::remove_dir_all(&path).is_ok() {
                        removed += 1;
                    }
                } else if name.ends_with(crate::lock::GUARD_SUFFIX) && kind.is_file() {
                    if self.break_guard_if_stale(&path) {
                        removed += 1;
                    }
                } else if kind.is_dir() {
                    stack.push((path, depth + 1));
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listable_names() {
        assert!(listable("example.com.crt"));
        assert!(listable(".hidden"));
        assert!(!listable(".certstore-tmp-0011"));
        assert!(!listable(".certstore-locks"));
        assert!(!listable("a\\b"));
        assert!(!listable("a\nb"));
        assert!(!listable(""));
        assert!(!listable(&"x".repeat(MAX_SEGMENT_LEN + 1)));
    }

    #[test]
    fn temp_files_remove_themselves_unless_disarmed() {
        let dir = tempfile::tempdir().unwrap();
        let (_, temp) = TempFile::create(dir.path()).unwrap();
        let path = temp.path.clone();
        assert!(path.exists());
        drop(temp);
        assert!(!path.exists());
        let (_, mut temp) = TempFile::create(dir.path()).unwrap();
        temp.disarm();
        let path = temp.path.clone();
        drop(temp);
        assert!(path.exists());
    }
}
