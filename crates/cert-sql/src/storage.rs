//! [`Storage`] for [`SqlStorage`]: values, paged listing, stat and fenced writes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cert_core::{
    Error, KeyInfo, Lease, Result, Storage, list_from_keys, range_end, range_start, validate_key,
    validate_prefix, validate_value,
};

use crate::backend::Write;
use crate::lock::lock_lost;
use crate::{SqlStorage, error};

/// Keys fetched per page while listing.
const LIST_PAGE: usize = 2000;

impl SqlStorage {
    async fn list_all(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        let end = range_end(prefix);
        let skip = if prefix.is_empty() {
            0
        } else {
            prefix.len() + 1
        };
        let mut lower = range_start(prefix);
        let mut found: Vec<String> = Vec::new();
        let limit = i64::try_from(LIST_PAGE).unwrap_or(i64::MAX);
        loop {
            let page = on_backend!(self, b => b.list_page(&lower, end.as_deref(), limit).await)?;
            let full = page.len() >= LIST_PAGE;
            let Some(last) = page.last().cloned() else {
                break;
            };
            if recursive {
                found.extend(page);
            } else {
                for key in page {
                    let child = child_of(&key, skip);
                    if found.last().map(String::as_str) != Some(child) {
                        found.push(child.to_owned());
                    }
                }
            }
            if !full {
                break;
            }
            let child = child_of(&last, skip);
            lower = if !recursive && child.len() < last.len() {
                // Every key below this sub-prefix is already accounted for: jump past
                // them (`'0'` follows `'/'`).
                format!("{child}0")
            } else {
                // The least string above `last` that a valid key could equal or
                // follow: keys never contain control characters.
                format!("{last}\u{1}")
            };
        }
        Ok(list_from_keys(prefix, found, recursive))
    }
}

/// The direct child of the listed prefix that `key` falls in (`skip` is the length of
/// `prefix/`).
fn child_of(key: &str, skip: usize) -> &str {
    match key.get(skip..).and_then(|rest| rest.find('/')) {
        Some(slash) => &key[..skip + slash],
        None => key,
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn from_micros(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    let time = if micros >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    time.unwrap_or(UNIX_EPOCH)
}

#[async_trait]
impl Storage for SqlStorage {
    async fn store(&self, key: &str, value: &[u8]) -> Result<()> {
        validate_key(key)?;
        validate_value(key, value.len())?;
        let modified = now_micros();
        self.timed(async { on_backend!(self, b => b.store(key, value, modified).await) })
            .await
    }

    async fn load(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        self.timed(async { on_backend!(self, b => b.load(key).await) })
            .await?
            .ok_or_else(|| Error::not_found(key))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let start = range_start(key);
        let end = range_end(key).unwrap_or_default();
        let deleted = self
            .timed(async { on_backend!(self, b => b.delete(key, &start, &end).await) })
            .await?;
        if deleted == 0 {
            return Err(Error::not_found(key));
        }
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        let start = range_start(key);
        let end = range_end(key).unwrap_or_default();
        self.timed(async { on_backend!(self, b => b.exists(key, &start, &end).await) })
            .await
    }

    async fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        self.timed(self.list_all(prefix, recursive)).await
    }

    async fn stat(&self, key: &str) -> Result<KeyInfo> {
        validate_key(key)?;
        self.timed(async {
            if let Some((size, modified)) = on_backend!(self, b => b.stat_key(key).await)? {
                let size = u64::try_from(size)
                    .map_err(|_| error::corrupt(key, "stored size is negative"))?;
                return Ok(KeyInfo::terminal(key, size, from_micros(modified)));
            }
            let start = range_start(key);
            let end = range_end(key).unwrap_or_default();
            match on_backend!(self, b => b.stat_prefix(&start, &end).await)? {
                Some(newest) => Ok(KeyInfo::prefix(key, from_micros(newest))),
                None => Err(Error::not_found(key)),
            }
        })
        .await
    }

    /// The local deadline check first (no round trip), then one transaction that locks
    /// the lease's row, matched by token and a live expiry by the database's clock, and
    /// upserts the value; [`Error::LockLost`], with nothing written, when the row does not
    /// match.
    async fn store_fenced(&self, key: &str, value: &[u8], lease: &Lease) -> Result<()> {
        lease.check_fence()?;
        validate_key(key)?;
        validate_key(lease.name())?;
        validate_value(key, value.len())?;
        let write = Write::Store {
            key,
            value,
            modified: now_micros(),
        };
        let (name, token) = (lease.name(), lease.token().as_str());
        self.timed(async { on_backend!(self, b => b.fenced(name, token, write).await) })
            .await?
            .ok_or_else(|| lock_lost(name))?;
        Ok(())
    }

    /// Like [`store_fenced`](Self::store_fenced), deleting in the same transaction as the
    /// check.
    async fn delete_fenced(&self, key: &str, lease: &Lease) -> Result<()> {
        lease.check_fence()?;
        validate_key(key)?;
        validate_key(lease.name())?;
        let start = range_start(key);
        let end = range_end(key).unwrap_or_default();
        let write = Write::Delete {
            key,
            start: &start,
            end: &end,
        };
        let (name, token) = (lease.name(), lease.token().as_str());
        let deleted = self
            .timed(async { on_backend!(self, b => b.fenced(name, token, write).await) })
            .await?
            .ok_or_else(|| lock_lost(name))?;
        if deleted == 0 {
            return Err(Error::not_found(key));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_and_times() {
        assert_eq!(child_of("a/b/c", 2), "a/b");
        assert_eq!(child_of("a/b", 2), "a/b");
        assert_eq!(child_of("x/y", 0), "x");
        assert_eq!(child_of("x", 0), "x");
        assert_eq!(
            from_micros(1_500_000),
            UNIX_EPOCH + Duration::from_millis(1500)
        );
        assert!(from_micros(-1) < UNIX_EPOCH);
    }
}
