//! Removing what interrupted operations left behind anywhere below the root: temporary
//! files, half-deleted directories and stale lock guards.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use cert_core::Result;

use crate::Config;
use crate::error::{io_failure, is_absent};
use crate::lock_guard::GUARD_SUFFIX;
use crate::path::MAX_DEPTH;
use crate::temp::{DEL_PREFIX, TMP_PREFIX};

impl Config {
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
                } else if name.ends_with(GUARD_SUFFIX) && kind.is_file() {
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
