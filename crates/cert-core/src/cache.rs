//! The in-memory certificate cache the TLS handshake reads from.
//!
//! Lookups are synchronous and never touch storage: a handshake hashes the server name
//! once, takes one shard's read lock and clones an [`Arc`]. Exact names are tried first,
//! then the wildcard one level up (`a.example.com` is served by `*.example.com`).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hashbrown::HashTable;
use parking_lot::{Mutex, RwLock};
use rustls::sign::CertifiedKey;

const SHARDS: usize = 64;

/// A bounded, sharded map from server names to certificates.
///
/// Names are matched case-insensitively and a trailing dot is ignored. When full, an
/// insert evicts an entry that has not been read since the eviction sweep last passed it
/// (a second-chance approximation of least-recently-used that costs a handshake one
/// relaxed atomic load).
pub struct Cache {
    shards: Box<[RwLock<Shard>]>,
    hasher: foldhash::fast::RandomState,
    capacity: usize,
    len: AtomicUsize,
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Default)]
struct Shard {
    exact: HashTable<Slot>,
    wildcard: HashTable<Slot>,
}

struct Slot {
    name: Box<str>,
    hash: u64,
    cert: Arc<CertifiedKey>,
    used: AtomicBool,
}

impl Slot {
    fn hit(&self) -> Arc<CertifiedKey> {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        Arc::clone(&self.cert)
    }
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for Cache {
    /// A cache for 100,000 names.
    fn default() -> Self {
        Cache::new(100_000)
    }
}

enum Kind {
    Exact,
    Wildcard,
}

/// Lower-cases ASCII and drops one trailing dot, borrowing when nothing changes (the
/// common case: rustls already lower-cases SNI).
fn normalize(name: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // The entries gauge counts every cache of the process: this one's leave it.
        crate::metrics::cache_entries(-(self.len.load(Ordering::Relaxed) as f64));
    }
}

impl Cache {
    /// A cache holding at most `capacity` names (exact and wildcard together; at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Cache {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            hasher: foldhash::fast::RandomState::default(),
            capacity,
            len: AtomicUsize::new(0),
            loading: Mutex::new(HashMap::new()),
        }
    }

    /// The most names the cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many names the cache holds now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the cache holds no name.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        // Bits 32.. pick the shard; the table uses the low bits and the top seven.
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    fn lookup(&self, kind: Kind, key: &str) -> Option<Arc<CertifiedKey>> {
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash).read();
        let table = match kind {
            Kind::Exact => &shard.exact,
            Kind::Wildcard => &shard.wildcard,
        };
        table.find(hash, |slot| &*slot.name == key).map(Slot::hit)
    }

    /// The certificate for `server_name`: the exact name, else a wildcard one level up.
    pub fn get(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = normalize(server_name);
        if let Some(cert) = self.lookup(Kind::Exact, &name) {
            return Some(cert);
        }
        let (_, parent) = name.split_once('.')?;
        self.lookup(Kind::Wildcard, parent)
    }

    /// The certificate stored under exactly `name` (`*.example.com` for a wildcard), with
    /// no wildcard fallback.
    pub fn get_exact(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = normalize(name);
        match name.strip_prefix("*.") {
            Some(parent) => self.lookup(Kind::Wildcard, parent),
            None => self.lookup(Kind::Exact, &name),
        }
    }

    /// Stores `cert` under `name` (`*.example.com` stores a wildcard), replacing what was
    /// there, and returns the replaced certificate.
    pub fn insert(&self, name: &str, cert: Arc<CertifiedKey>) -> Option<Arc<CertifiedKey>> {
        let name = normalize(name);
        let (kind, key) = match name.strip_prefix("*.") {
            Some(parent) => (Kind::Wildcard, parent),
            None => (Kind::Exact, &*name),
        };
        let hash = self.hasher.hash_one(key);
        {
            let mut shard = self.shard(hash).write();
            let table = match kind {
                Kind::Exact => &mut shard.exact,
                Kind::Wildcard => &mut shard.wildcard,
            };
            if let Some(slot) = table.find_mut(hash, |slot| &*slot.name == key) {
                return Some(std::mem::replace(&mut slot.cert, cert));
            }
            table.insert_unique(
                hash,
                Slot {
                    name: key.into(),
                    hash,
                    cert,
                    used: AtomicBool::new(false),
                },
                |slot| slot.hash,
            );
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        crate::metrics::cache_entries(1.0);
        while self.len.load(Ordering::Relaxed) > self.capacity {
            if !self.evict_one((hash >> 32) as usize, hash) {
                break;
            }
            crate::metrics::cache_eviction();
        }
        None
    }

    /// Evicts one entry other than the one with hash `keep`: the first not read since the
    /// sweep last passed it, visiting shards from `start` and clearing the read marks it
    /// passes; when every entry was read, the first one passed. Holds one shard lock at a
    /// time.
    fn evict_one(&self, start: usize, keep: u64) -> bool {
        let mut fallback = None;
        for i in 0..SHARDS {
            let index = (start + i) % SHARDS;
            let mut shard = self.shards[index].write();
            let Shard { exact, wildcard } = &mut *shard;
            for table in [exact, wildcard] {
                let mut victim = None;
                for slot in table.iter() {
                    if slot.hash == keep {
                        continue;
                    }
                    fallback.get_or_insert((index, slot.hash, slot.name.clone()));
                    if !slot.used.swap(false, Ordering::Relaxed) {
                        victim = Some((slot.hash, slot.name.clone()));
                        break;
                    }
                }
                if let Some((hash, name)) = victim
                    && remove_slot(table, hash, &name)
                {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    return true;
                }
            }
        }
        let Some((index, hash, name)) = fallback else {
            return false;
        };
        let mut shard = self.shards[index].write();
        let Shard { exact, wildcard } = &mut *shard;
        if remove_slot(exact, hash, &name) || remove_slot(wildcard, hash, &name) {
            self.len.fetch_sub(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Removes `name` (`*.example.com` for a wildcard) and returns its certificate.
    pub fn remove(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = normalize(name);
        let (kind, key) = match name.strip_prefix("*.") {
            Some(parent) => (Kind::Wildcard, parent),
            None => (Kind::Exact, &*name),
        };
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard(hash).write();
        let table = match kind {
            Kind::Exact => &mut shard.exact,
            Kind::Wildcard => &mut shard.wildcard,
        };
        let removed = table
            .find_entry(hash, |slot| &*slot.name == key)
            .ok()
            .map(|entry| entry.remove().0.cert);
        if removed.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
            crate::metrics::cache_entries(-1.0);
        }
        removed
    }

    /// Every name held, wildcards as `*.parent`, in no particular order.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            names.extend(shard.exact.iter().map(|s| s.name.to_string()));
            names.extend(shard.wildcard.iter().map(|s| format!("*.{}", s.name)));
        }
        names
    }

    /// The certificate for `server_name` if cached, else the result of `init`, which is
    /// cached under `server_name` when it succeeds.
    ///
    /// However many callers ask for one name at once, one `init` runs at a time for it:
    /// the others wait and then find its result in the cache. An error is returned to the
    /// caller whose `init` failed and is not cached; the next waiter then runs its own
    /// `init`. Dropping a caller's future while its `init` runs lets the next one start.
    pub async fn get_or_try_insert_with<F, Fut, E>(
        &self,
        server_name: &str,
        init: F,
    ) -> Result<Arc<CertifiedKey>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<CertifiedKey>, E>>,
    {
        if let Some(cert) = self.get(server_name) {
            return Ok(cert);
        }
        let name = normalize(server_name).into_owned();
        let gate = Arc::clone(
            self.loading
                .lock()
                .entry(name.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(()))),
        );
        let result = {
            let _turn = match gate.try_lock() {
                Ok(turn) => turn,
                Err(_) => {
                    crate::metrics::single_flight_wait();
                    gate.lock().await
                }
            };
            match self.get(&name) {
                Some(cert) => Ok(cert),
                None => init().await.inspect(|cert| {
                    self.insert(&name, Arc::clone(cert));
                }),
            }
        };
        let mut loading = self.loading.lock();
        // The map's reference and ours: no other caller is waiting on this name.
        if Arc::strong_count(&gate) <= 2 {
            loading.remove(&name);
        }
        result
    }
}

fn remove_slot(table: &mut HashTable<Slot>, hash: u64, name: &str) -> bool {
    match table.find_entry(hash, |slot| &*slot.name == name) {
        Ok(entry) => {
            entry.remove();
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::dummy_certified_key;

    #[test]
    fn exact_then_wildcard_case_insensitive() {
        let cache = Cache::new(100);
        let exact = dummy_certified_key(1);
        let wild = dummy_certified_key(2);
        cache.insert("a.Example.com", Arc::clone(&exact));
        cache.insert("*.example.COM.", Arc::clone(&wild));
        assert!(Arc::ptr_eq(&cache.get("A.example.com.").unwrap(), &exact));
        assert!(Arc::ptr_eq(&cache.get("b.example.com").unwrap(), &wild));
        assert!(cache.get("example.com").is_none());
        assert!(cache.get("x.b.example.com").is_none(), "one level only");
        assert!(cache.get_exact("b.example.com").is_none());
        assert!(Arc::ptr_eq(
            &cache.get_exact("*.example.com").unwrap(),
            &wild
        ));
        assert_eq!(cache.len(), 2);
        let mut names = cache.names();
        names.sort();
        assert_eq!(names, vec!["*.example.com", "a.example.com"]);
        assert!(cache.remove("*.example.com").is_some());
        assert!(cache.get("b.example.com").is_none());
    }

    #[test]
    fn insert_replaces_and_returns_old() {
        let cache = Cache::new(10);
        assert!(cache.insert("a", dummy_certified_key(1)).is_none());
        let old = cache.insert("A", dummy_certified_key(2)).unwrap();
        assert_eq!(old.cert[0].as_ref(), &[1]);
        assert_eq!(cache.get("a").unwrap().cert[0].as_ref(), &[2]);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn holds_its_capacity_and_no_more() {
        let cache = Cache::new(1000);
        for i in 0..1000 {
            cache.insert(&format!("n{i}.example"), dummy_certified_key(1));
        }
        assert_eq!(cache.len(), 1000);
        assert!((0..1000).all(|i| cache.get(&format!("n{i}.example")).is_some()));
        for i in 0..5000 {
            cache.insert(&format!("m{i}.example"), dummy_certified_key(2));
            assert!(cache.len() <= 1000);
        }
        assert_eq!(cache.len(), 1000);
        assert_eq!(cache.names().len(), 1000);
    }

    #[test]
    fn evicts_unread_before_read() {
        let cache = Cache::new(3);
        cache.insert("a", dummy_certified_key(1));
        cache.insert("b", dummy_certified_key(2));
        cache.insert("c", dummy_certified_key(3));
        assert!(cache.get("a").is_some());
        assert!(cache.get("c").is_some());
        cache.insert("d", dummy_certified_key(4));
        assert!(
            cache.get_exact("b").is_none(),
            "the unread entry goes first"
        );
        for name in ["a", "c", "d"] {
            assert!(cache.get_exact(name).is_some(), "{name}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_loader_per_name() {
        use std::sync::atomic::AtomicUsize;
        let cache = Arc::new(Cache::new(100));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let cache = Arc::clone(&cache);
            let calls = Arc::clone(&calls);
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_try_insert_with("cold.example", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        Ok::<_, ()>(dummy_certified_key(7))
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().cert[0].as_ref(), &[7]);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(cache.loading.lock().is_empty());
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let cache = Cache::new(10);
        let err = cache
            .get_or_try_insert_with("x", || async { Err::<Arc<CertifiedKey>, _>("down") })
            .await;
        assert_eq!(err.unwrap_err(), "down");
        assert!(cache.get("x").is_none());
        let ok = cache
            .get_or_try_insert_with("x", || async { Ok::<_, &str>(dummy_certified_key(3)) })
            .await
            .unwrap();
        assert_eq!(ok.cert[0].as_ref(), &[3]);
    }
}
