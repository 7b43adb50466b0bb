//! Temporary entries: files being written and directories being deleted, named with
//! reserved prefixes so they are never listed, and a temporary file that removes itself
//! unless renamed into place.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::path::OPEN_FLAGS;

/// Name prefix of temporary files (values and lock files being written).
pub(crate) const TMP_PREFIX: &str = ".certstore-tmp-";
/// Name prefix of directories being deleted (moved aside first, then removed).
pub(crate) const DEL_PREFIX: &str = ".certstore-del-";

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

#[cfg(test)]
mod tests {
    use super::*;

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
