//! Lock files: where a lock's files live below the root, the lease format they hold
//! (format line, token, expiry in unix milliseconds), reading them, and finding every
//! lock's name.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cert_core::{LockToken, Result};

use crate::Config;
use crate::error::{io_failure, is_absent};
use crate::lock_guard::GUARD_SUFFIX;
use crate::path::open_nofollow;
use crate::temp::TMP_PREFIX;

/// The directory below the root that holds lock files.
pub(crate) const LOCK_DIR: &str = ".certstore-locks";
/// Suffix of lock files.
const LOCK_SUFFIX: &str = ".lock";
/// First line of a lock file.
const FORMAT: &str = "certstore-lock 1";
/// Lock files are tiny; anything longer is not ours.
const MAX_LOCK_FILE: u64 = 4096;

/// The paths of one lock.
pub(crate) struct LockPaths {
    /// `.certstore-locks/<name>.lock`, relative to the root.
    pub(crate) rel: String,
    pub(crate) file: PathBuf,
    pub(crate) guard: PathBuf,
    pub(crate) dir: PathBuf,
}

impl LockPaths {
    pub(crate) fn new(config: &Config, name: &str) -> Self {
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
pub(crate) struct Current {
    pub(crate) raw: Vec<u8>,
    pub(crate) token: Option<String>,
    pub(crate) expires_ms: Option<u64>,
}

pub(crate) fn encode(token: &LockToken, expires_ms: u64) -> String {
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

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Reads a lock file; `None` when there is none.
pub(crate) fn read_lock(path: &Path) -> Result<Option<Current>> {
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

impl Config {
    /// The names of every lock file below the lock directory, sorted.
    pub(crate) fn lock_names(&self) -> Result<Vec<String>> {
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
