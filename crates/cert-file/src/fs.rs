//! Values as files: atomic writes (temporary file, rename), reads, `exists` and `stat`,
//! and deletes that prune the directories they leave empty.
//!
//! Keys are walked without following links (see the `path` module); every function
//! here takes a key that has already been validated.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::SystemTime;

use cert_core::{Error, KeyInfo, MAX_VALUE_LEN, Result};

use crate::Config;
use crate::error::{BACKEND, FileError, io_error, io_failure, is_absent, not_regular, symlink};
use crate::list::{has_keys, listable};
use crate::path::{MAX_DEPTH, Step, open_nofollow, sync_dir};
use crate::resolve::Probe;
use crate::temp::{DEL_PREFIX, TMP_PREFIX, TempFile};

/// How many times a write is retried when concurrent deletes prune its directories.
const WRITE_ATTEMPTS: u32 = 16;

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
}
