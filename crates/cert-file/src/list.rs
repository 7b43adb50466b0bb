//! Listing: which directory entries are keys, whether a directory holds any, and
//! [`Storage::list`](cert_core::Storage::list) over the tree. Listings use the entries'
//! types and never stat a listed file.

use std::fs;
use std::path::Path;

use cert_core::{MAX_KEY_LEN, MAX_SEGMENT_LEN, RESERVED_PREFIX, Result};

use crate::Config;
use crate::error::{io_failure, is_absent, symlink};
use crate::path::MAX_DEPTH;

/// Whether a directory entry's name can be a key segment this backend lists. Reserved
/// names (temporary files, the lock directory) and names no valid key could have are
/// skipped.
pub(crate) fn listable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SEGMENT_LEN
        && !name.starts_with(RESERVED_PREFIX)
        && !name.chars().any(|c| c.is_control() || c == '\\')
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

impl Config {
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
}
