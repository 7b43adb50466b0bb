//! Cluster-wide mutual exclusion: the [`Locker`] primitives backends implement, and the
//! waiting, keep-alive and release logic built on them once, here.
//!
//! A lock is a lease. [`Locker::try_acquire`] takes a free (or expired) lock for a time to
//! live and returns a [`Lease`] carrying a unique token; only that token can
//! [`refresh`](Locker::refresh) or [`release`](Locker::release) it. A holder that crashes
//! loses the lock when its lease runs out.
//!
//! [`lock`] waits for a lock with jittered backoff and returns a [`LockGuard`] that
//! refreshes the lease in the background until it is released. Work done under a lock must
//! re-check storage after acquiring: another node may have done it while this one waited.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// The atomic lock primitives a backend provides.
///
/// Implementations must be safe across processes and hosts sharing the backend: two
/// callers can never both hold a live lease for one name. Lock names follow the key rules
/// of [`validate_key`](crate::validate_key) and live in a namespace of their own, apart
/// from storage keys. Expiry should be judged by the backend server's clock where it has
/// one, so clock skew between nodes cannot break exclusion.
#[async_trait]
pub trait Locker: Send + Sync + 'static {
    /// Tries once to take the lock `name` for `ttl`: `Ok(Some(lease))` when taken (the
    /// lock was free or its previous lease had expired), `Ok(None)` when another live
    /// lease holds it.
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>>;

    /// Extends `lease` to `ttl` from now and returns the extended lease. Fails with
    /// [`Error::LockLost`] when `lease` is not the live holder (expired, taken over,
    /// released, or a foreign token), without disturbing the real holder.
    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease>;

    /// Releases `lease`. Fails with [`Error::LockLost`] when `lease` is not the live holder,
    /// without disturbing the real holder.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// Removes locks whose lease has expired and returns how many were removed. Only
    /// backends that leave expired locks behind (lock rows, lock files) need this; where
    /// the server drops expired locks by itself (Redis `PX`, blob leases) the default, which
    /// removes nothing, is right. Must never remove a live lease. Wrappers forward it.
    async fn clean_expired_locks(&self) -> Result<usize> {
        Ok(0)
    }
}

/// A random token identifying one lease.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LockToken(String);

impl LockToken {
    /// A fresh token: 128 random bits from the operating system, as 32 hex digits.
    ///
    /// Falls back to a time-and-counter based value only if the OS random source fails,
    /// which keeps tokens unique within a process.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mixed = nanos ^ (u128::from(count) << 64) ^ u128::from(std::process::id());
            bytes = mixed.to_le_bytes();
        }
        LockToken(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A token read back from a backend.
    pub fn from_string(token: impl Into<String>) -> Self {
        LockToken(token.into())
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockToken({})", self.0)
    }
}

impl fmt::Display for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One holding of a lock: its name, token and how long it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    name: String,
    token: LockToken,
    ttl: Duration,
    deadline: Instant,
}

impl Lease {
    /// A lease on `name` with `token` for `ttl`, counted from `started`, the instant
    /// just *before* the request that took or refreshed it was sent, so the local deadline
    /// never outlives the one the backend enforces.
    pub fn new(name: impl Into<String>, token: LockToken, ttl: Duration, started: Instant) -> Self {
        Lease {
            name: name.into(),
            token,
            ttl,
            deadline: started + ttl,
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lease's token.
    pub fn token(&self) -> &LockToken {
        &self.token
    }

    /// The time to live this lease was taken or last refreshed with.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The local instant after which the lease can no longer be relied on.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the local deadline has passed.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The time left before the local deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The part of the lease a fenced write keeps in reserve: a fifth of the time to live,
    /// between 50 ms and 10 s. A write is only started while more than this is left, so the
    /// write itself (a network round trip, an fsync) completes before the deadline.
    pub fn fence_margin(&self) -> Duration {
        (self.ttl / 5).clamp(Duration::from_millis(50), Duration::from_secs(10))
    }

    /// `Ok` while the lease has more than its [`fence_margin`](Lease::fence_margin) left;
    /// [`Error::LockLost`] otherwise. Every write made under a lease checks this first.
    pub fn check_fence(&self) -> Result<()> {
        if self.remaining() > self.fence_margin() {
            Ok(())
        } else {
            Err(Error::LockLost {
                name: self.name.clone(),
            })
        }
    }

    /// The same lease with the deadline moved to `ttl` after `started` (for backends'
    /// `refresh`).
    pub fn renewed(&self, ttl: Duration, started: Instant) -> Lease {
        Lease::new(self.name.clone(), self.token.clone(), ttl, started)
    }
}

/// How [`lock`] and [`try_lock`] take and keep a lock.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LockOptions {
    /// Lease time to live; the guard refreshes it every `ttl / 3`. Default 30 s.
    pub ttl: Duration,
    /// Give up waiting after this long with [`Error::LockTimeout`]; `None` (the default)
    /// waits until the future is dropped.
    pub timeout: Option<Duration>,
    /// First pause between attempts while the lock is held elsewhere. Default 2 ms.
    pub min_backoff: Duration,
    /// Longest pause between attempts. Default 200 ms.
    pub max_backoff: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            ttl: Duration::from_secs(30),
            timeout: None,
            min_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(200),
        }
    }
}

impl LockOptions {
    /// Options with this lease time to live.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Options that give up waiting after `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Options with these bounds for the pause between attempts.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }
}

/// Waits until the lock `name` is taken and returns a guard that keeps it alive.
///
/// Attempts that fail with a [retryable](Error::is_retryable) error are retried with the
/// same backoff as a held lock until the timeout, which then reports that last error
/// rather than [`Error::LockTimeout`]; any other error is returned at once.
///
/// Cancel-safe: dropping the returned future at any point never leaves the lock held (an
/// attempt in flight when the future is dropped releases what it took).
pub async fn lock(locker: Arc<dyn Locker>, name: &str, options: &LockOptions) -> Result<LockGuard> {
    let started = Instant::now();
    let wake = LocalWaiters::register(name);
    let mut backoff = options.min_backoff;
    loop {
        // A transient failure (the backend unreachable or overloaded for a moment) is
        // waited out like a held lock; only a failure that retrying cannot cure ends the
        // wait early. The last transient error is kept to explain a timeout.
        let failure = match attempt(&locker, name, options.ttl).await {
            Ok(Some(lease)) => return Ok(LockGuard::start(locker, lease)),
            Ok(None) => None,
            Err(err) if err.is_retryable() => {
                tracing::debug!(lock = name, error = %err, "lock attempt failed; retrying");
                Some(err)
            }
            Err(err) => return Err(err),
        };
        let mut pause = jitter(backoff);
        if let Some(timeout) = options.timeout {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(failure.unwrap_or_else(|| Error::LockTimeout {
                    name: name.to_owned(),
                }));
            }
            pause = pause.min(left);
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = wake.notified() => {}
        }
        backoff = backoff.mul_f64(1.5).min(options.max_backoff);
    }
}

/// Tries once to take the lock `name`: a guard, or `None` while another lease holds it.
pub async fn try_lock(
    locker: Arc<dyn Locker>,
    name: &str,
    options: &LockOptions,
) -> Result<Option<LockGuard>> {
    Ok(attempt(&locker, name, options.ttl)
        .await?
        .map(|lease| LockGuard::start(locker, lease)))
}

/// One cancel-safe acquisition attempt: the request runs in its own task, and if the
/// caller is gone by the time it succeeds, the task releases what it took.
async fn attempt(locker: &Arc<dyn Locker>, name: &str, ttl: Duration) -> Result<Option<Lease>> {
    let (tx, rx) = oneshot::channel();
    let task_locker = Arc::clone(locker);
    let task_name = name.to_owned();
    tokio::spawn(async move {
        let result = task_locker.try_acquire(&task_name, ttl).await;
        if let Err(Ok(Some(lease))) = tx.send(result) {
            let _ = task_locker.release(&lease).await;
        }
    });
    match rx.await {
        Ok(result) => result,
        Err(_) => Err(Error::backend(
            "lock",
            std::io::Error::other("lock attempt task ended without an answer"),
        )),
    }
}

fn jitter(pause: Duration) -> Duration {
    pause.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// Wakes waiters in this process as soon as a guard here releases the same name, so local
/// contention does not wait out a backoff pause. Waiters elsewhere still poll.
struct LocalWaiters {
    name: String,
    notify: Arc<Notify>,
}

static LOCAL_WAITERS: LazyLock<Mutex<HashMap<String, Arc<Notify>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl LocalWaiters {
    fn register(name: &str) -> Self {
        let notify = Arc::clone(
            LOCAL_WAITERS
                .lock()
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(Notify::new())),
        );
        LocalWaiters {
            name: name.to_owned(),
            notify,
        }
    }

    async fn notified(&self) {
        self.notify.notified().await;
    }

    fn wake(name: &str) {
        if let Some(notify) = LOCAL_WAITERS.lock().get(name) {
            notify.notify_waiters();
        }
    }
}

impl Drop for LocalWaiters {
    fn drop(&mut self) {
        let mut waiters = LOCAL_WAITERS.lock();
        // The map's reference and ours: nobody else is waiting on this name.
        if Arc::strong_count(&self.notify) <= 2 {
            waiters.remove(&self.name);
        }
    }
}

struct Shared {
    lease: Mutex<Lease>,
    lost: watch::Sender<bool>,
    /// Set to stop the keep-alive: it ends at its next pause, after finishing any refresh
    /// under way, so the lease it leaves is the one the backend last granted.
    stop: watch::Sender<bool>,
}

/// A held lock. A background task refreshes the lease every third of its time to live;
/// if the lease is lost (refresh refused, the backend unreachable until the lease ran
/// out, or a refresh still unanswered at the lease's deadline) [`is_lost`](LockGuard::is_lost) turns true and [`lost`](LockGuard::lost) resolves.
///
/// Release with [`release`](LockGuard::release); dropping the guard also releases, on a
/// best-effort basis, from a spawned task.
pub struct LockGuard {
    locker: Arc<dyn Locker>,
    shared: Arc<Shared>,
    keepalive: Option<JoinHandle<()>>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("lease", &*self.shared.lease.lock())
            .field("lost", &*self.shared.lost.borrow())
            .finish()
    }
}

impl LockGuard {
    fn start(locker: Arc<dyn Locker>, lease: Lease) -> Self {
        let (lost, _) = watch::channel(false);
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            lease: Mutex::new(lease),
            lost,
            stop,
        });
        let keepalive = tokio::spawn(keep_alive(Arc::clone(&locker), Arc::clone(&shared)));
        LockGuard {
            locker,
            shared,
            keepalive: Some(keepalive),
        }
    }

    /// The lock's name.
    pub fn name(&self) -> String {
        self.shared.lease.lock().name().to_owned()
    }

    /// The current lease (its deadline moves on with every refresh).
    pub fn lease(&self) -> Lease {
        self.shared.lease.lock().clone()
    }

    /// Whether the lease has been lost: work under it must stop.
    pub fn is_lost(&self) -> bool {
        *self.shared.lost.borrow() || self.shared.lease.lock().is_expired()
    }

    /// Resolves once the lease is lost; never resolves while it is kept.
    pub async fn lost(&self) {
        let mut rx = self.shared.lost.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// Stops the keep-alive and releases the lock. Fails with [`Error::LockLost`] when the
    /// lease had already been lost.
    pub async fn release(mut self) -> Result<()> {
        // Wait for a refresh under way: aborting it mid-request could leave the backend
        // holding a newer lease than the one released here. (If this future is dropped
        // meanwhile, `Drop` still releases.)
        self.shared.stop.send_replace(true);
        if let Some(task) = self.keepalive.as_mut() {
            let _ = task.await;
        }
        self.keepalive = None;
        let lease = self.lease();
        let result = self.locker.release(&lease).await;
        LocalWaiters::wake(lease.name());
        result
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(task) = self.keepalive.take() else {
            return; // released explicitly
        };
        self.shared.stop.send_replace(true);
        let shared = Arc::clone(&self.shared);
        let locker = Arc::clone(&self.locker);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = task.await;
                    let lease = shared.lease.lock().clone();
                    let _ = locker.release(&lease).await;
                    LocalWaiters::wake(lease.name());
                });
            }
            Err(_) => task.abort(),
        }
    }
}

/// Sleeps `duration`; true when told to stop (before or during the sleep).
async fn pause(stop: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(duration) => false,
        stopped = stop.wait_for(|stop| *stop) => stopped.is_ok(),
    };
    stopped || *stop.borrow()
}

async fn keep_alive(locker: Arc<dyn Locker>, shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    loop {
        let current = shared.lease.lock().clone();
        let ttl = current.ttl();
        if pause(&mut stop, ttl / 3).await {
            return;
        }
        let mut retry = (ttl / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            let current = shared.lease.lock().clone();
            if current.is_expired() {
                shared.lost.send_replace(true);
                return;
            }
            // A refresh answered after the deadline is worthless: another node may already
            // hold the lock. So the request is bounded by the time left, and a refresh
            // still under way at the deadline means the lease is lost. (Should the backend
            // apply that refresh after all, its lease simply runs out unused.)
            let refreshed =
                tokio::time::timeout(current.remaining(), locker.refresh(&current, ttl)).await;
            let Ok(refreshed) = refreshed else {
                shared.lost.send_replace(true);
                tracing::warn!(
                    lock = current.name(),
                    "lock refresh still unanswered at the lease deadline; lease lost"
                );
                return;
            };
            match refreshed {
                Ok(renewed) => {
                    *shared.lease.lock() = renewed;
                    break;
                }
                Err(Error::LockLost { .. }) => {
                    shared.lost.send_replace(true);
                    tracing::warn!(lock = current.name(), "lock lease lost");
                    return;
                }
                Err(err) => {
                    tracing::warn!(lock = current.name(), error = %err, "lock refresh failed; retrying");
                    let left = current.deadline().saturating_duration_since(Instant::now());
                    if pause(&mut stop, retry.min(left)).await {
                        return;
                    }
                    retry = (retry * 2).min(ttl / 3);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_are_unique_and_hex() {
        let a = LockToken::generate();
        let b = LockToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn lease_deadline_counts_from_start() {
        let start = Instant::now();
        let lease = Lease::new("n", LockToken::generate(), Duration::from_secs(5), start);
        assert_eq!(lease.deadline(), start + Duration::from_secs(5));
        assert!(!lease.is_expired());
        let old = Lease::new("n", LockToken::generate(), Duration::ZERO, start);
        assert!(old.is_expired());
    }

    /// A backend whose refresh lands at once but is acknowledged slowly, and which only
    /// releases a lease whose last refresh it acknowledged (as a backend conditioning the
    /// release on the version its refresh wrote does).
    #[derive(Default)]
    struct SlowAck {
        /// Refreshes applied by the "server" / acknowledged to the client.
        applied: std::sync::atomic::AtomicU32,
        acknowledged: std::sync::atomic::AtomicU32,
    }

    #[async_trait]
    impl Locker for SlowAck {
        async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
            Ok(Some(Lease::new(
                name,
                LockToken::generate(),
                ttl,
                Instant::now(),
            )))
        }
        async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
            use std::sync::atomic::Ordering::SeqCst;
            let started = Instant::now();
            let version = self.applied.fetch_add(1, SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.acknowledged.store(version, SeqCst);
            Ok(lease.renewed(ttl, started))
        }
        async fn release(&self, lease: &Lease) -> Result<()> {
            use std::sync::atomic::Ordering::SeqCst;
            if self.applied.load(SeqCst) == self.acknowledged.load(SeqCst) {
                Ok(())
            } else {
                Err(Error::LockLost {
                    name: lease.name().to_owned(),
                })
            }
        }
    }

    #[tokio::test]
    async fn release_waits_for_a_refresh_under_way() {
        let backend = Arc::new(SlowAck::default());
        let options = LockOptions::default().with_ttl(Duration::from_millis(600));
        let guard = lock(backend.clone(), "slow", &options).await.unwrap();
        // The keep-alive refreshes after 200 ms; its answer comes 200 ms later.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            backend.applied.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "a refresh is under way"
        );
        guard.release().await.unwrap();
        assert_eq!(
            backend
                .acknowledged
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
    }

    /// A backend whose acquisitions fail `failures` times with `error` before they
    /// succeed, and whose refreshes never answer.
    struct Flaky {
        failures: std::sync::atomic::AtomicU32,
        retryable: bool,
    }

    #[async_trait]
    impl Locker for Flaky {
        async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
            use std::sync::atomic::Ordering::SeqCst;
            let left = self.failures.load(SeqCst);
            if left > 0 {
                self.failures.store(left - 1, SeqCst);
                let io = std::io::Error::other("flaky");
                return Err(if self.retryable {
                    Error::unavailable("flaky", io)
                } else {
                    Error::backend("flaky", io)
                });
            }
            Ok(Some(Lease::new(
                name,
                LockToken::generate(),
                ttl,
                Instant::now(),
            )))
        }
        async fn refresh(&self, _lease: &Lease, _ttl: Duration) -> Result<Lease> {
            std::future::pending().await
        }
        async fn release(&self, _lease: &Lease) -> Result<()> {
            Ok(())
        }
    }

    fn flaky(failures: u32, retryable: bool) -> Arc<Flaky> {
        Arc::new(Flaky {
            failures: std::sync::atomic::AtomicU32::new(failures),
            retryable,
        })
    }

    #[tokio::test]
    async fn lock_waits_out_transient_errors_only() {
        let options = LockOptions::default()
            .with_ttl(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(5));
        let guard = lock(flaky(5, true), "transient", &options).await.unwrap();
        assert!(!guard.is_lost());
        drop(guard);
        let err = lock(flaky(1, false), "permanent", &options)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
        // Still failing at the timeout: the last transient error explains it.
        let short = options.clone().with_timeout(Duration::from_millis(50));
        let err = lock(flaky(u32::MAX, true), "down", &short)
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
    }

    #[tokio::test]
    async fn unanswered_refresh_loses_the_lease_at_its_deadline() {
        let ttl = Duration::from_millis(300);
        let started = Instant::now();
        let guard = lock(
            flaky(0, true),
            "stalled",
            &LockOptions::default().with_ttl(ttl),
        )
        .await
        .unwrap();
        tokio::time::timeout(ttl + Duration::from_secs(3), guard.lost())
            .await
            .expect("the guard did not notice its stalled refresh");
        assert!(started.elapsed() + Duration::from_millis(5) >= ttl);
        assert!(guard.is_lost());
        // Releasing does not wait for the stalled request either.
        tokio::time::timeout(Duration::from_secs(1), guard.release())
            .await
            .expect("release hung on a stalled refresh")
            .unwrap();
    }

    #[test]
    fn options_builders() {
        let opts = LockOptions::default()
            .with_ttl(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(1))
            .with_backoff(Duration::from_millis(9), Duration::from_millis(1));
        assert_eq!(opts.ttl, Duration::from_secs(3));
        assert_eq!(opts.timeout, Some(Duration::from_secs(1)));
        assert_eq!(opts.max_backoff, Duration::from_millis(9));
    }
}
