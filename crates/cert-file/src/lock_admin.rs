//! The operators' view of the locks: [`LockAdmin`] for [`FileStorage`].

use std::fs;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use cert_core::{Error, LockAdmin, LockInfo, Result, validate_key};

use crate::error::{io_failure, is_absent};
use crate::lock_file::{LockPaths, now_ms, read_lock};
use crate::{Config, FileStorage, blocking};

/// What an operator sees of one lock file.
pub(crate) struct Listed {
    pub(crate) name: String,
    pub(crate) token: String,
    pub(crate) modified: Option<SystemTime>,
    pub(crate) expires_in: Option<Duration>,
}

impl Config {
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

/// Lock files listed with their token, last write and expiry; forced release removes a
/// lock file under its guard, whoever holds it.
#[async_trait]
impl LockAdmin for FileStorage {
    async fn list_locks(&self) -> Result<Vec<LockInfo>> {
        let config = Arc::clone(&self.config);
        let listed = blocking(move || config.list_locks()).await?;
        Ok(listed
            .into_iter()
            .map(|lock| {
                let mut info = LockInfo::new(lock.name, lock.token);
                if let Some(modified) = lock.modified {
                    info = info.with_since(modified);
                }
                if let Some(left) = lock.expires_in {
                    info = info.with_expires_in(left);
                }
                info
            })
            .collect())
    }

    async fn force_release(&self, name: &str) -> Result<bool> {
        validate_key(name)?;
        let config = Arc::clone(&self.config);
        let name = name.to_owned();
        blocking(move || config.force_release(&name)).await
    }
}
