//! [`MemoryStorage`]: a [`Storage`] and [`Locker`] kept in this process's memory.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::lock::{Lease, LockToken, Locker};
use crate::storage::{
    KeyInfo, Storage, is_below, list_from_keys, range_end, range_start, validate_key,
    validate_prefix, validate_value,
};

/// A storage and locker in memory, for tests and single-process programs.
///
/// Clones share the same data, so two clones behave like two nodes of one cluster. It
/// follows the rules of a file system, like the file backend: a key cannot hold a value
/// and have keys below it at the same time ([`Error::Conflict`]).
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    inner: Arc<Inner>,
}

/// Fenced writes hold `locks` while they take `values`; nothing takes them in the other
/// order, so the two never deadlock.
#[derive(Debug, Default)]
struct Inner {
    values: RwLock<BTreeMap<String, Entry>>,
    locks: Mutex<HashMap<String, Held>>,
}

#[derive(Debug)]
struct Entry {
    value: Arc<[u8]>,
    modified: SystemTime,
}

#[derive(Debug)]
struct Held {
    token: LockToken,
    expires: Instant,
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys hold values.
    pub fn len(&self) -> usize {
        self.inner.values.read().len()
    }

    /// Whether no key holds a value.
    pub fn is_empty(&self) -> bool {
        self.inner.values.read().is_empty()
    }
}

fn below<'a>(
    values: &'a BTreeMap<String, Entry>,
    prefix: &str,
) -> impl Iterator<Item = (&'a String, &'a Entry)> {
    let start = Bound::Included(range_start(prefix));
    let end = match range_end(prefix) {
        Some(end) => Bound::Excluded(end),
        None => Bound::Unbounded,
    };
    values
        .range::<String, _>((start, end))
        .filter(move |(key, _)| is_below(key, prefix))
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn store(&self, key: &str, value: &[u8]) -> Result<()> {
        validate_key(key)?;
        validate_value(key, value.len())?;
        insert(&mut self.inner.values.write(), key, value)
    }

    async fn load(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        match self.inner.values.read().get(key) {
            Some(entry) => Ok(entry.value.to_vec()),
            None => Err(Error::not_found(key)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        remove(&mut self.inner.values.write(), key)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        let values = self.inner.values.read();
        Ok(values.contains_key(key) || below(&values, key).next().is_some())
    }

    async fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let values = self.inner.values.read();
        Ok(list_from_keys(
            prefix,
            below(&values, prefix).map(|(k, _)| k.as_str()),
            recursive,
        ))
    }

    async fn stat(&self, key: &str) -> Result<KeyInfo> {
        validate_key(key)?;
        let values = self.inner.values.read();
        if let Some(entry) = values.get(key) {
            return Ok(KeyInfo::terminal(
                key,
                entry.value.len() as u64,
                entry.modified,
            ));
        }
        below(&values, key)
            .map(|(_, entry)| entry.modified)
            .max()
            .map(|newest| KeyInfo::prefix(key, newest))
            .ok_or_else(|| Error::not_found(key))
    }

    /// Checks the lease in the lock table and writes while holding the table's mutex, so
    /// no takeover can slip between the check and the write, whatever the caller's local
    /// deadline says.
    async fn store_fenced(&self, key: &str, value: &[u8], lease: &Lease) -> Result<()> {
        lease.check_fence()?;
        validate_key(key)?;
        validate_value(key, value.len())?;
        let locks = self.inner.locks.lock();
        check_holder(&locks, lease)?;
        let result = insert(&mut self.inner.values.write(), key, value);
        drop(locks);
        result
    }

    /// Like [`store_fenced`](Storage::store_fenced): the lease is checked and the keys
    /// removed under the lock table's mutex.
    async fn delete_fenced(&self, key: &str, lease: &Lease) -> Result<()> {
        lease.check_fence()?;
        validate_key(key)?;
        let locks = self.inner.locks.lock();
        check_holder(&locks, lease)?;
        let result = remove(&mut self.inner.values.write(), key);
        drop(locks);
        result
    }
}

/// `Ok` when `lease` is the live holder of its lock in `locks`, else [`Error::LockLost`].
fn check_holder(locks: &HashMap<String, Held>, lease: &Lease) -> Result<()> {
    match locks.get(lease.name()) {
        Some(held) if held.token == *lease.token() && held.expires > Instant::now() => Ok(()),
        _ => Err(Error::LockLost {
            name: lease.name().to_owned(),
        }),
    }
}

/// Creates or overwrites `key` in `values`, refusing a value above or below another one.
fn insert(values: &mut BTreeMap<String, Entry>, key: &str, value: &[u8]) -> Result<()> {
    if below(values, key).next().is_some() {
        return Err(Error::Conflict {
            key: key.to_owned(),
            reason: "keys exist below it".into(),
        });
    }
    let mut parent = key;
    while let Some((up, _)) = parent.rsplit_once('/') {
        if values.contains_key(up) {
            return Err(Error::Conflict {
                key: key.to_owned(),
                reason: format!("{up} holds a value"),
            });
        }
        parent = up;
    }
    values.insert(
        key.to_owned(),
        Entry {
            value: value.into(),
            modified: SystemTime::now(),
        },
    );
    Ok(())
}

/// Removes `key` and every key below it from `values`; `NotFound` when there is none.
fn remove(values: &mut BTreeMap<String, Entry>, key: &str) -> Result<()> {
    let doomed: Vec<String> = below(values, key).map(|(k, _)| k.clone()).collect();
    let had_value = values.remove(key).is_some();
    if !had_value && doomed.is_empty() {
        return Err(Error::not_found(key));
    }
    for k in doomed {
        values.remove(&k);
    }
    Ok(())
}

#[async_trait]
impl Locker for MemoryStorage {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        validate_key(name)?;
        let now = Instant::now();
        let mut locks = self.inner.locks.lock();
        if let Some(held) = locks.get(name)
            && held.expires > now
        {
            return Ok(None);
        }
        let token = LockToken::generate();
        locks.insert(
            name.to_owned(),
            Held {
                token: token.clone(),
                expires: now + ttl,
            },
        );
        Ok(Some(Lease::new(name, token, ttl, now)))
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        validate_key(lease.name())?;
        let now = Instant::now();
        let mut locks = self.inner.locks.lock();
        match locks.get_mut(lease.name()) {
            Some(held) if held.token == *lease.token() && held.expires > now => {
                held.expires = now + ttl;
                Ok(lease.renewed(ttl, now))
            }
            _ => Err(Error::LockLost {
                name: lease.name().to_owned(),
            }),
        }
    }

    async fn clean_expired_locks(&self) -> Result<usize> {
        let now = Instant::now();
        let mut locks = self.inner.locks.lock();
        let before = locks.len();
        locks.retain(|_, held| held.expires > now);
        Ok(before - locks.len())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        validate_key(lease.name())?;
        let now = Instant::now();
        let mut locks = self.inner.locks.lock();
        match locks.get(lease.name()) {
            Some(held) if held.token == *lease.token() && held.expires > now => {
                locks.remove(lease.name());
                Ok(())
            }
            _ => Err(Error::LockLost {
                name: lease.name().to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hierarchy_conflicts_lose_nothing() {
        let s = MemoryStorage::new();
        s.store("a/b", b"1").await.unwrap();
        assert!(matches!(
            s.store("a", b"2").await,
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            s.store("a/b/c", b"3").await,
            Err(Error::Conflict { .. })
        ));
        assert_eq!(s.load("a/b").await.unwrap(), b"1");
        assert_eq!(s.len(), 1);
    }

    #[tokio::test]
    async fn cleaning_removes_only_expired_locks() {
        let s = MemoryStorage::new();
        s.try_acquire("old", Duration::ZERO).await.unwrap().unwrap();
        let live = s
            .try_acquire("live", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.clean_expired_locks().await.unwrap(), 1);
        assert_eq!(s.clean_expired_locks().await.unwrap(), 0);
        s.refresh(&live, Duration::from_secs(60)).await.unwrap();
    }

    #[tokio::test]
    async fn fenced_writes_check_the_lock_table() {
        let s = MemoryStorage::new();
        let ttl = Duration::from_secs(60);
        let old = s.try_acquire("f", Duration::ZERO).await.unwrap().unwrap();
        let new = s.try_acquire("f", ttl).await.unwrap().unwrap();
        s.store_fenced("k", b"new", &new).await.unwrap();
        // The old token with a deadline that looks fresh: only the lock table knows.
        let stale = Lease::new("f", old.token().clone(), ttl, Instant::now());
        assert!(matches!(
            s.store_fenced("k", b"stale", &stale).await,
            Err(Error::LockLost { .. })
        ));
        assert!(matches!(
            s.delete_fenced("k", &stale).await,
            Err(Error::LockLost { .. })
        ));
        assert_eq!(s.load("k").await.unwrap(), b"new");
        s.delete_fenced("k", &new).await.unwrap();
        assert!(s.is_empty());
        s.release(&new).await.unwrap();
        let released = Lease::new("f", new.token().clone(), ttl, Instant::now());
        assert!(matches!(
            s.store_fenced("k", b"late", &released).await,
            Err(Error::LockLost { .. })
        ));
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn expired_lease_cannot_release_a_new_holder() {
        let s = MemoryStorage::new();
        let old = s.try_acquire("l", Duration::ZERO).await.unwrap().unwrap();
        let new = s
            .try_acquire("l", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(s.release(&old).await, Err(Error::LockLost { .. })));
        assert!(
            s.try_acquire("l", Duration::from_secs(60))
                .await
                .unwrap()
                .is_none()
        );
        s.release(&new).await.unwrap();
    }
}
