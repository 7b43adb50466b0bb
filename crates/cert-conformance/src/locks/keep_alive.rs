//! Lock cases about keep-alive: a guard keeps its lock while refreshes work, and notices
//! within its time to live when they stop working.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cert_core::{Lease, Locker, Store, lock};

use super::{TIMER_SLACK, acquire, as_locker, assert_held, join, options, take_by};
use crate::Fixture;
use crate::support::{lock_lost, ok, released};

/// The guard returned by [`lock`] keeps refreshing: with a 300 ms time to live it holds
/// the lock for well over a second, nobody else gets it, and the guard is not lost.
pub async fn keep_alive_holds_lock(fixture: &Fixture) {
    let caps = fixture.capabilities();
    let main = fixture.store().await;
    let other = fixture.open_another().await;
    let ttl = caps.ttl(Duration::from_millis(300));
    let hold = (ttl * 5).max(Duration::from_millis(1500));
    let guard = ok(lock(as_locker(&main), "kept", &options(ttl)).await, "lock");
    let started = Instant::now();
    let long = caps.ttl(Duration::from_secs(10));
    let mut attempts = 0;
    while started.elapsed() < hold {
        assert_held(&*other, "kept", long, "while its guard keeps it alive").await;
        assert!(
            !guard.is_lost(),
            "the guard lost a lock it was keeping alive"
        );
        attempts += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(attempts > 3, "the contender hardly ran");
    let lease = guard.lease();
    assert!(
        !lease.is_expired(),
        "the guard's lease ran out although it was refreshed"
    );
    ok(guard.release().await, "release after a long hold");
    let free = acquire(&*other, "kept", long).await;
    ok(other.release(&free).await, "release");
}

/// How a [`Faulty`] locker treats refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefreshFault {
    /// Forward them to the store.
    Pass,
    /// Answer [`Error::LockLost`](cert_core::Error::LockLost) at once, as a backend does
    /// after a takeover.
    Refuse,
    /// Never answer, as a stalled connection does.
    Stall,
    /// Fail with a retryable error every time, as an unreachable backend does.
    Fail,
}

/// A locker that forwards to the store under test but can be told to break refreshes:
/// the only way to make a guard's keep-alive fail on demand through the public API.
/// Acquisitions and releases always reach the store, so what it holds is real.
#[derive(Debug)]
struct Faulty {
    inner: Arc<dyn Store>,
    fault: std::sync::Mutex<RefreshFault>,
}

impl Faulty {
    fn new(inner: Arc<dyn Store>) -> Self {
        Faulty {
            inner,
            fault: std::sync::Mutex::new(RefreshFault::Pass),
        }
    }

    fn set(&self, fault: RefreshFault) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    fn fault(&self) -> RefreshFault {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cert_core::async_trait]
impl Locker for Faulty {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> cert_core::Result<Option<Lease>> {
        self.inner.try_acquire(name, ttl).await
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> cert_core::Result<Lease> {
        match self.fault() {
            RefreshFault::Pass => self.inner.refresh(lease, ttl).await,
            RefreshFault::Refuse => Err(cert_core::Error::LockLost {
                name: lease.name().to_owned(),
            }),
            RefreshFault::Stall => std::future::pending().await,
            RefreshFault::Fail => Err(cert_core::Error::unavailable(
                "conformance",
                std::io::Error::other("refresh failed on purpose"),
            )),
        }
    }

    async fn release(&self, lease: &Lease) -> cert_core::Result<()> {
        self.inner.release(lease).await
    }
}

/// How late after its lease's deadline a guard may notice the loss: timers and task
/// scheduling only, no request is involved, but on a machine busy with other work a task
/// can wait its turn for a while.
const NOTICE_SLACK: Duration = Duration::from_millis(1500);

/// A guard whose refreshes fail notices within its time to live, whichever way they
/// fail (refused as taken over, stalled without answer, failing with a transient error):
/// [`is_lost`](cert_core::LockGuard::is_lost) turns true and
/// [`lost`](cert_core::LockGuard::lost) resolves by the lease's deadline (plus timer
/// slack); then another instance takes the lock once the backend lets the lease expire.
pub async fn lost_lock_noticed_within_ttl(fixture: &Fixture) {
    let caps = fixture.capabilities().clone();
    let main = fixture.store().await;
    let other = fixture.open_another().await;
    let ttl = caps.ttl(Duration::from_millis(600));
    let long = caps.ttl(Duration::from_secs(10));
    let mut cases = Vec::new();
    for (name, fault) in [
        ("lost/refused", RefreshFault::Refuse),
        ("lost/stalled", RefreshFault::Stall),
        ("lost/failing", RefreshFault::Fail),
    ] {
        let faulty = Arc::new(Faulty::new(Arc::clone(&main)));
        let other = Arc::clone(&other);
        let caps = caps.clone();
        cases.push(tokio::spawn(async move {
            let before = Instant::now();
            let locker: Arc<dyn Locker> = Arc::clone(&faulty) as Arc<dyn Locker>;
            let guard = ok(lock(locker, name, &options(ttl)).await, "lock");
            let answered = Instant::now();
            faulty.set(fault);
            let deadline = guard.lease().deadline();
            let noticed =
                tokio::time::timeout_at((deadline + NOTICE_SLACK).into(), guard.lost()).await;
            assert!(
                noticed.is_ok(),
                "{name}: the guard did not notice ({fault:?} refreshes) within {:?} of its \
                 lease's deadline ({:?} after lock())",
                NOTICE_SLACK,
                deadline.duration_since(before)
            );
            assert!(
                guard.is_lost(),
                "{name}: lost() resolved but is_lost() is false"
            );
            // The backend lease was never refreshed: it runs out `ttl` after the
            // acquisition was answered at the latest (on a busy machine the request may
            // leave long after `lock()` was called, so count from its answer).
            let latest = answered + ttl + caps.lock_expiry_slack + TIMER_SLACK;
            let (lease, _) = take_by(&*other, name, long, latest).await;
            lock_lost(
                guard.release().await,
                format_args!("{name}: release of the lost guard"),
            );
            released(
                other.release(&lease).await,
                &lease,
                "release by the new holder",
            );
        }));
    }
    for case in cases {
        join(case).await;
    }
}
