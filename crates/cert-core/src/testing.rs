//! Small helpers for tests and benchmarks of code that handles certificates: a dummy
//! certified key, an issuer that counts, fails and stalls on command (`CountingIssuer`),
//! a self-signed certificate maker (`self_signed_certificate`) (these three with the
//! `engine` feature) and a storage that fails or stalls on command ([`FaultyStorage`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

#[cfg(feature = "engine")]
mod engine;

#[cfg(feature = "engine")]
pub use engine::{CountingIssuer, dummy_certified_key, self_signed_certificate};

/// What a [`FaultyStorage`] is told to do, shared by its clones.
#[derive(Debug, Default)]
struct Faults {
    /// Write calls seen, refused ones included: numbers the writes.
    seen: u64,
    /// Keys of the writes forwarded to the inner storage, in order.
    log: Vec<String>,
    /// Write calls refused.
    refused: u64,
    /// How many more writes go through before every write fails; `None`: no limit.
    budget: Option<u64>,
    /// A stall before every write.
    stall_every: Option<Duration>,
    /// A stall before the write with this number (of `seen`).
    stall_one: Option<(u64, Duration)>,
    /// A stall before every lock refresh.
    stall_refresh: Option<Duration>,
    /// The end of the current hang: a stalled write hangs the whole store until then.
    hung_until: Option<tokio::time::Instant>,
    /// A pause before every load.
    load_delay: Option<Duration>,
    /// Loads under way now, and the most ever under way at once.
    loading: (usize, usize),
}

/// A [`Storage`](crate::Storage) and [`Locker`](crate::Locker) wrapper over any store
/// that injects the faults a cluster meets: a process that dies in the middle of a
/// multi-value write, a storage that stalls for longer than a lease.
///
/// Every call is forwarded to the inner store, including
/// [`store_fenced`](crate::Storage::store_fenced), [`delete_fenced`](crate::Storage::delete_fenced)
/// and [`clean_expired_locks`](crate::Locker::clean_expired_locks), so a backend's own
/// fencing is what decides a fenced write. The *writes* are `store`, `store_fenced`,
/// `delete` and `delete_fenced`; on command they:
/// - fail after the k-th write from now ([`fail_after_writes`](FaultyStorage::fail_after_writes)):
///   writes `1..=k` go through, the later ones fail with [`Error::Unavailable`](crate::Error)
///   without reaching the inner store, as if the process had been killed at that moment;
/// - stall before one write or before every write ([`stall_write`](FaultyStorage::stall_write),
///   [`stall_writes`](FaultyStorage::stall_writes)), to model a storage that hangs for
///   longer than a lease. A stalled write hangs the whole store: other writes and lock
///   refreshes made meanwhile wait for the hang to end too, so the keep-alive of a lease
///   held by the stalled writer misses its deadline. Each write is forwarded after the
///   stall.
///
/// Lock refreshes can also be stalled on their own ([`stall_locks`](FaultyStorage::stall_locks)),
/// so a holder's keep-alive misses its deadline and the lease is lost while everything
/// else works. Taking and releasing locks are never failed or stalled: a killed process's
/// lock simply runs out, and tests need not wait for that. Reads never fail; loads can be
/// slowed ([`slow_loads`](FaultyStorage::slow_loads)) to see how many a caller keeps in
/// flight at once ([`most_loads_at_once`](FaultyStorage::most_loads_at_once)).
///
/// Clones share the inner store and the faults: keep one to give orders while an engine
/// holds another.
///
/// ```
/// use cert_core::testing::FaultyStorage;
/// use cert_core::{MemoryStorage, Storage};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cert_core::Result<()> {
/// let storage = FaultyStorage::new(MemoryStorage::new());
/// storage.fail_after_writes(1);
/// storage.store("a", b"1").await?;
/// assert!(storage.store("b", b"2").await.is_err());
/// storage.heal();
/// storage.store("b", b"2").await?;
/// assert_eq!(storage.writes(), 2);
/// assert_eq!(storage.refused_writes(), 1);
/// # Ok(())
/// # }
/// ```
pub struct FaultyStorage<S: ?Sized> {
    inner: Arc<S>,
    faults: Arc<Mutex<Faults>>,
}

impl<S: ?Sized> Clone for FaultyStorage<S> {
    fn clone(&self) -> Self {
        FaultyStorage {
            inner: Arc::clone(&self.inner),
            faults: Arc::clone(&self.faults),
        }
    }
}

impl<S: std::fmt::Debug + ?Sized> std::fmt::Debug for FaultyStorage<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let faults = self.faults.lock();
        f.debug_struct("FaultyStorage")
            .field("inner", &self.inner)
            .field("writes", &faults.log.len())
            .field("refused", &faults.refused)
            .field("budget", &faults.budget)
            .finish_non_exhaustive()
    }
}

impl<S> FaultyStorage<S> {
    /// A healthy wrapper over `inner`.
    pub fn new(inner: S) -> Self {
        Self::from_arc(Arc::new(inner))
    }
}

impl<S: ?Sized> FaultyStorage<S> {
    /// A healthy wrapper over a shared `inner` (which may be an `Arc<dyn Store>`).
    pub fn from_arc(inner: Arc<S>) -> Self {
        FaultyStorage {
            inner,
            faults: Arc::new(Mutex::new(Faults::default())),
        }
    }

    /// The wrapped store, untouched by any fault.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// Lets the next `k` writes through and fails every write after them (until
    /// [`heal`](FaultyStorage::heal)). `0` fails the very next write.
    pub fn fail_after_writes(&self, k: u64) {
        self.faults.lock().budget = Some(k);
    }

    /// Stalls the `n`-th write from now (`1` is the next one; `0` counts as `1`) for
    /// `duration` before forwarding it; writes and lock refreshes made during the stall
    /// wait for its end.
    pub fn stall_write(&self, n: u64, duration: Duration) {
        let mut faults = self.faults.lock();
        let at = faults.seen + n.max(1);
        faults.stall_one = Some((at, duration));
    }

    /// Stalls every write from now on for `duration` before forwarding it; writes and
    /// lock refreshes made during a stall wait for its end.
    pub fn stall_writes(&self, duration: Duration) {
        self.faults.lock().stall_every = Some(duration);
    }

    /// Stalls every lock refresh from now on for `duration` before forwarding it. A
    /// keep-alive gives up on a refresh still unanswered at the lease's deadline, so a
    /// stall longer than the time to live loses the lease.
    pub fn stall_locks(&self, duration: Duration) {
        self.faults.lock().stall_refresh = Some(duration);
    }

    /// Removes every fault: writes go through and nothing stalls from now on (a stall
    /// already under way runs to its end). The counters are kept.
    pub fn heal(&self) {
        let mut faults = self.faults.lock();
        faults.budget = None;
        faults.stall_every = None;
        faults.stall_one = None;
        faults.stall_refresh = None;
        faults.hung_until = None;
        faults.load_delay = None;
    }

    /// Makes every load from now on wait `delay` before it is forwarded.
    pub fn slow_loads(&self, delay: Duration) {
        self.faults.lock().load_delay = Some(delay);
    }

    /// The most loads ever under way at once.
    pub fn most_loads_at_once(&self) -> usize {
        self.faults.lock().loading.1
    }

    /// The writes forwarded to the inner store so far (whatever the inner store answered).
    pub fn writes(&self) -> usize {
        self.faults.lock().log.len()
    }

    /// The keys of the writes forwarded so far, in order (a delete logs the key or prefix
    /// it removes).
    pub fn written_keys(&self) -> Vec<String> {
        self.faults.lock().log.clone()
    }

    /// The writes refused by [`fail_after_writes`](FaultyStorage::fail_after_writes) so
    /// far.
    pub fn refused_writes(&self) -> u64 {
        self.faults.lock().refused
    }

    /// Numbers a write, decides its fate, waits out any stall, and then lets it through
    /// (recording it) or refuses it.
    async fn write(&self, op: &'static str, key: &str) -> crate::Result<()> {
        let (number, resume, allowed) = {
            let mut faults = self.faults.lock();
            faults.seen += 1;
            let number = faults.seen;
            let stall = match faults.stall_one {
                Some((at, duration)) if at == number => {
                    faults.stall_one = None;
                    Some(duration)
                }
                _ => faults.stall_every,
            };
            let now = tokio::time::Instant::now();
            let resume = match (stall, faults.hung_until) {
                (Some(stall), hung) => {
                    let end = hung.map_or(now + stall, |hung| hung.max(now + stall));
                    faults.hung_until = Some(end);
                    Some(now + stall)
                }
                (None, Some(hung)) if hung > now => Some(hung),
                (None, _) => None,
            };
            let allowed = match faults.budget {
                None => true,
                Some(0) => false,
                Some(left) => {
                    faults.budget = Some(left - 1);
                    true
                }
            };
            (number, resume, allowed)
        };
        if let Some(resume) = resume {
            tokio::time::sleep_until(resume).await;
        }
        let mut faults = self.faults.lock();
        if allowed {
            faults.log.push(key.to_owned());
            Ok(())
        } else {
            faults.refused += 1;
            Err(crate::Error::unavailable(
                "faulty",
                std::io::Error::other(format!(
                    "{op} {key:?} (write {number}) refused: the storage is failing on purpose"
                )),
            ))
        }
    }
}

#[async_trait]
impl<S: crate::Storage + ?Sized> crate::Storage for FaultyStorage<S> {
    async fn store(&self, key: &str, value: &[u8]) -> crate::Result<()> {
        self.write("store", key).await?;
        self.inner.store(key, value).await
    }

    async fn load(&self, key: &str) -> crate::Result<Vec<u8>> {
        let delay = {
            let mut faults = self.faults.lock();
            faults.loading.0 += 1;
            faults.loading.1 = faults.loading.1.max(faults.loading.0);
            faults.load_delay
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let loaded = self.inner.load(key).await;
        self.faults.lock().loading.0 -= 1;
        loaded
    }

    async fn delete(&self, key: &str) -> crate::Result<()> {
        self.write("delete", key).await?;
        self.inner.delete(key).await
    }

    async fn exists(&self, key: &str) -> crate::Result<bool> {
        self.inner.exists(key).await
    }

    async fn list(&self, prefix: &str, recursive: bool) -> crate::Result<Vec<String>> {
        self.inner.list(prefix, recursive).await
    }

    async fn stat(&self, key: &str) -> crate::Result<crate::KeyInfo> {
        self.inner.stat(key).await
    }

    async fn store_fenced(
        &self,
        key: &str,
        value: &[u8],
        lease: &crate::Lease,
    ) -> crate::Result<()> {
        self.write("store_fenced", key).await?;
        self.inner.store_fenced(key, value, lease).await
    }

    async fn delete_fenced(&self, key: &str, lease: &crate::Lease) -> crate::Result<()> {
        self.write("delete_fenced", key).await?;
        self.inner.delete_fenced(key, lease).await
    }
}

#[async_trait]
impl<S: crate::Locker + ?Sized> crate::Locker for FaultyStorage<S> {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> crate::Result<Option<crate::Lease>> {
        self.inner.try_acquire(name, ttl).await
    }

    async fn refresh(&self, lease: &crate::Lease, ttl: Duration) -> crate::Result<crate::Lease> {
        let (stall, hung_until) = {
            let faults = self.faults.lock();
            (faults.stall_refresh, faults.hung_until)
        };
        if let Some(hung_until) = hung_until {
            tokio::time::sleep_until(hung_until).await;
        }
        if let Some(stall) = stall {
            tokio::time::sleep(stall).await;
        }
        self.inner.refresh(lease, ttl).await
    }

    async fn release(&self, lease: &crate::Lease) -> crate::Result<()> {
        self.inner.release(lease).await
    }

    async fn clean_expired_locks(&self) -> crate::Result<usize> {
        self.inner.clean_expired_locks().await
    }

    fn lock_admin(&self) -> Option<&dyn crate::LockAdmin> {
        self.inner.lock_admin()
    }
}
