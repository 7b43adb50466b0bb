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

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

mod lease;
mod waiters;

pub use lease::{Lease, LockToken};
use waiters::LocalWaiters;

/// The atomic lock primitives a backend provides.
///
/// Implementations must be safe across processes and hosts sharing the backend: two
/// callers can never both hold a live lease for one name. Lock names follow the key rules
/// of [`validate_key`](crate::validate_key) and live in a namespace of their own, apart
/// from storage keys. Expiry should be judged by the backend server's clock where it has
/// one, so clock skew between nodes cannot break exclusion.
#[async_trait]
pub trait Locker: fmt::Debug + Send + Sync + 'static {
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

    /// The operators' view of the locks (listing them, releasing one by force) when the
    /// backend offers it: `None` by default, `Some(self)` from backends that implement
    /// [`LockAdmin`](crate::LockAdmin). Wrappers forward it, so lock administration is
    /// reached through any storage stack.
    fn lock_admin(&self) -> Option<&dyn crate::LockAdmin> {
        None
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
            Ok(Some(lease)) => {
                crate::metrics::lock_taken(started.elapsed());
                return Ok(LockGuard::start(locker, lease));
            }
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

/// One cancel-safe acquisition attempt: the request runs in its own task, and a lease it
/// takes travels to the caller as a [`Delivery`], which releases the lease if the caller
/// is gone before claiming it: whether the caller left before the answer was sent, or
/// after it was sent but before it was read.
async fn attempt(locker: &Arc<dyn Locker>, name: &str, ttl: Duration) -> Result<Option<Lease>> {
    let (tx, rx) = oneshot::channel();
    let task_locker = Arc::clone(locker);
    let task_name = name.to_owned();
    tokio::spawn(async move {
        let result = task_locker.try_acquire(&task_name, ttl).await.map(|taken| {
            taken.map(|lease| Delivery {
                locker: Arc::clone(&task_locker),
                lease: Some(lease),
            })
        });
        // When the caller is gone, the answer comes back here and is dropped, which
        // releases its lease; when it is gone later, the channel drops it the same way.
        drop(tx.send(result));
    });
    match rx.await {
        Ok(result) => Ok(result?.and_then(Delivery::claim)),
        Err(_) => Err(Error::backend(
            "lock",
            std::io::Error::other("lock attempt task ended without an answer"),
        )),
    }
}

/// A lease on its way from an attempt's task to the caller of [`lock`] or [`try_lock`].
/// Dropped unclaimed (the caller's future was dropped), it releases the lease from a
/// spawned task, so a cancelled wait never leaves the lock held until its lease expires.
struct Delivery {
    locker: Arc<dyn Locker>,
    lease: Option<Lease>,
}

impl Delivery {
    fn claim(mut self) -> Option<Lease> {
        self.lease.take()
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        // Outside a runtime there is nothing to run the release on: the lease expires.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let locker = Arc::clone(&self.locker);
            runtime.spawn(async move {
                let _ = locker.release(&lease).await;
                LocalWaiters::wake(lease.name());
            });
        }
    }
}

fn jitter(pause: Duration) -> Duration {
    pause.mul_f64(0.5 + fastrand::f64() * 0.5)
}

struct Shared {
    lease: Mutex<Lease>,
    lost: watch::Sender<bool>,
    /// Set to stop the keep-alive: it ends at its next pause, after finishing any refresh
    /// under way, so the lease it leaves is the one the backend last granted.
    stop: watch::Sender<bool>,
    /// When the lock was taken, for the hold time recorded at its release.
    taken: Instant,
}

impl Shared {
    fn mark_lost(&self) {
        if !self.lost.send_replace(true) {
            crate::metrics::lease_lost();
        }
    }
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
            taken: Instant::now(),
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
        crate::metrics::lock_ended(self.shared.taken.elapsed());
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
                    crate::metrics::lock_ended(shared.taken.elapsed());
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
                shared.mark_lost();
                return;
            }
            // A refresh answered after the deadline is worthless: another node may already
            // hold the lock. So the request is bounded by the time left, and a refresh
            // still under way at the deadline means the lease is lost. (Should the backend
            // apply that refresh after all, its lease simply runs out unused.)
            let refreshed =
                tokio::time::timeout(current.remaining(), locker.refresh(&current, ttl)).await;
            let Ok(refreshed) = refreshed else {
                shared.mark_lost();
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
                    shared.mark_lost();
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
mod tests;
