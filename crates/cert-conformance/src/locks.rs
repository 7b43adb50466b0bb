//! Cases about locks: exclusion, tokens, expiry, keep-alive and cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cert_core::{Lease, LockOptions, LockToken, Locker, Store, lock, try_lock};
use tokio::task::JoinHandle;

use crate::Fixture;
use crate::support::{assert_value, everything, lock_lost, ok};

/// Awaits a spawned task and passes its panic on.
async fn join<T>(task: JoinHandle<T>) -> T {
    match task.await {
        Ok(value) => value,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => panic!("a task of the case was cancelled: {err}"),
    }
}

fn as_locker(store: &Arc<dyn Store>) -> Arc<dyn Locker> {
    Arc::clone(store) as Arc<dyn Locker>
}

/// Options for `lock()` with `ttl` and a quick backoff, as tests want.
fn options(ttl: Duration) -> LockOptions {
    LockOptions::default()
        .with_ttl(ttl)
        .with_backoff(Duration::from_millis(1), Duration::from_millis(25))
}

/// Takes a free lock with [`Locker::try_acquire`], panicking when it is held.
async fn acquire(store: &dyn Store, name: &str, ttl: Duration) -> Lease {
    match ok(
        store.try_acquire(name, ttl).await,
        format_args!("try_acquire {name}"),
    ) {
        Some(lease) => lease,
        None => panic!("try_acquire {name}: a free lock was reported as held"),
    }
}

/// Panics unless the lock `name` is held by someone else right now.
async fn assert_held(store: &dyn Store, name: &str, ttl: Duration, what: &str) {
    if let Some(lease) = ok(
        store.try_acquire(name, ttl).await,
        format_args!("try_acquire {name}"),
    ) {
        let _ = store.release(&lease).await;
        panic!("{what}: the lock {name} was taken although it should be held");
    }
}

/// Lock names live apart from storage keys: taking a lock writes no key, a key with the
/// same name as a lock is independent of it, and deleting keys does not release locks.
pub async fn lock_names_apart_from_keys(fixture: &Fixture) {
    let s = fixture.store().await;
    let ttl = fixture.capabilities().ttl(Duration::from_secs(10));
    ok(s.store("names/x", b"value").await, "store names/x");
    let same = acquire(&*s, "names/x", ttl).await;
    let below = acquire(&*s, "names/x/y", ttl).await;
    let elsewhere = acquire(&*s, "lock-only/z", ttl).await;
    assert_eq!(
        everything(&*s).await,
        vec!["names/x".to_owned()],
        "taking locks changed the stored keys"
    );
    assert!(ok(s.list("", false).await, "list root") == vec!["names".to_owned()]);
    assert!(!ok(s.exists("lock-only").await, "exists lock-only"));
    assert_value(s.load("names/x").await, "names/x", b"value");
    ok(
        s.store("names/x", b"again").await,
        "store over a locked name",
    );
    ok(s.delete("names").await, "delete names");
    assert_held(&*s, "names/x", ttl, "after deleting keys of the same name").await;
    assert_held(
        &*s,
        "names/x/y",
        ttl,
        "after deleting keys of the same name",
    )
    .await;
    assert!(everything(&*s).await.is_empty(), "delete left keys behind");
    for lease in [same, below, elsewhere] {
        ok(s.release(&lease).await, "release");
    }
    assert!(
        everything(&*s).await.is_empty(),
        "releasing locks wrote keys"
    );
}

/// 8 tasks over two instances take one lock with [`lock`] three times each: never two
/// holders at once, every one gets through, and the counter they update is exact.
pub async fn lock_mutual_exclusion(fixture: &Fixture) {
    const TASKS: usize = 8;
    const ROUNDS: usize = 3;
    let main = fixture.store().await;
    let other = fixture.open_another().await;
    let opts = options(fixture.capabilities().ttl(Duration::from_secs(5)));
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = if t % 2 == 0 {
            Arc::clone(&main)
        } else {
            Arc::clone(&other)
        };
        let inside = Arc::clone(&inside);
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let guard = ok(lock(as_locker(&store), "mutex", &opts).await, "lock");
                let before = inside.fetch_add(1, Ordering::SeqCst);
                assert_eq!(before, 0, "two holders of one lock at the same time");
                let count = match store.load("mutex/count").await {
                    Ok(bytes) => bytes.len(),
                    Err(err) if err.is_not_found() => 0,
                    Err(err) => panic!("load counter: {err:?}"),
                };
                tokio::time::sleep(Duration::from_millis(3)).await;
                ok(
                    store.store("mutex/count", &vec![b'x'; count + 1]).await,
                    "store counter",
                );
                assert!(!guard.is_lost(), "a guard was lost while held");
                inside.fetch_sub(1, Ordering::SeqCst);
                ok(guard.release().await, "release");
            }
        }));
    }
    for task in tasks {
        join(task).await;
    }
    let count = ok(main.load("mutex/count").await, "load counter").len();
    assert_eq!(count, TASKS * ROUNDS, "updates were lost under the lock");
}

/// [`try_lock`] fails while the lock is held (through either instance) and succeeds after
/// release; a released lease cannot be refreshed or released again.
pub async fn try_lock_while_held(fixture: &Fixture) {
    let main = fixture.store().await;
    let other = fixture.open_another().await;
    let ttl = fixture.capabilities().ttl(Duration::from_secs(10));
    let opts = options(ttl);
    let guard = match ok(try_lock(as_locker(&main), "try", &opts).await, "try_lock") {
        Some(guard) => guard,
        None => panic!("try_lock of a free lock failed"),
    };
    for store in [&main, &other] {
        assert!(
            ok(try_lock(as_locker(store), "try", &opts).await, "try_lock").is_none(),
            "try_lock succeeded while the lock was held"
        );
    }
    assert_held(&*other, "try", ttl, "while a guard holds it").await;
    let lease = guard.lease();
    assert_eq!(lease.name(), "try");
    ok(guard.release().await, "release");
    let second = match ok(try_lock(as_locker(&other), "try", &opts).await, "try_lock") {
        Some(guard) => guard,
        None => panic!("try_lock failed after the holder released"),
    };
    lock_lost(
        main.refresh(&lease, ttl).await,
        "refresh of a released lease",
    );
    lock_lost(main.release(&lease).await, "release of a released lease");
    assert!(!second.is_lost(), "a stale lease disturbed the new holder");
    ok(second.release().await, "release by the new holder");
}

/// A lease with the right name but a foreign token cannot refresh or release the lock
/// ([`Error::LockLost`](cert_core::Error::LockLost)), and the real holder is undisturbed.
pub async fn foreign_token_refused(fixture: &Fixture) {
    let s = fixture.store().await;
    let other = fixture.open_another().await;
    let ttl = fixture.capabilities().ttl(Duration::from_secs(10));
    let holder = acquire(&*s, "foreign", ttl).await;
    let foreign = Lease::new("foreign", LockToken::generate(), ttl, Instant::now());
    for store in [&s, &other] {
        lock_lost(
            store.refresh(&foreign, ttl).await,
            "refresh with a foreign token",
        );
        lock_lost(
            store.release(&foreign).await,
            "release with a foreign token",
        );
    }
    assert_held(&*other, "foreign", ttl, "after foreign refresh and release").await;
    let holder = ok(s.refresh(&holder, ttl).await, "refresh by the holder");
    ok(s.release(&holder).await, "release by the holder");
    let never = Lease::new("never-held", LockToken::generate(), ttl, Instant::now());
    lock_lost(s.release(&never).await, "release of a lock nobody holds");
    lock_lost(
        s.refresh(&never, ttl).await,
        "refresh of a lock nobody holds",
    );
    let free = acquire(&*other, "foreign", ttl).await;
    ok(other.release(&free).await, "release");
}

/// After its time to live a lease can be taken over; the old lease then can neither
/// refresh nor release, and the new holder keeps the lock.
pub async fn expired_lease_refused(fixture: &Fixture) {
    let caps = fixture.capabilities();
    let s = fixture.store().await;
    let other = fixture.open_another().await;
    let short = caps.min_lock_ttl;
    // The new holder's lease must outlive the four requests that follow even when the
    // server stalls (an emulator on a busy machine): a minute, the longest blob lease.
    let long = caps.ttl(Duration::from_secs(60));
    let old = acquire(&*s, "expiring", short).await;
    tokio::time::sleep(short + caps.lock_expiry_slack + Duration::from_millis(100)).await;
    let new = match ok(other.try_acquire("expiring", long).await, "try_acquire") {
        Some(lease) => lease,
        None => panic!(
            "an expired lock (ttl {short:?}, slack {:?}) could not be taken over",
            caps.lock_expiry_slack
        ),
    };
    assert_ne!(old.token(), new.token(), "a takeover must get a new token");
    lock_lost(
        s.refresh(&old, long).await,
        "refresh of an expired, taken-over lease",
    );
    lock_lost(
        s.release(&old).await,
        "release of an expired, taken-over lease",
    );
    assert_held(
        &*s,
        "expiring",
        long,
        "after the stale lease tried to release",
    )
    .await;
    let new = ok(other.refresh(&new, long).await, "refresh by the new holder");
    ok(other.release(&new).await, "release by the new holder");
}

/// A holder that stops refreshing (a crashed node) loses the lock after its time to live,
/// not before, and exactly one of several racing waiters takes it.
pub async fn abandoned_lock_taken_over_by_one(fixture: &Fixture) {
    const WAITERS: usize = 6;
    let caps = fixture.capabilities().clone();
    let main = fixture.store().await;
    let other = fixture.open_another().await;
    let ttl = caps.ttl(Duration::from_millis(300));
    let long = caps.ttl(Duration::from_secs(30));
    let before = Instant::now();
    let abandoned = acquire(&*main, "abandoned", ttl).await;
    let give_up = before + ttl + caps.lock_expiry_slack + Duration::from_millis(1500);
    let mut waiters = Vec::new();
    for w in 0..WAITERS {
        let store = if w % 2 == 0 {
            Arc::clone(&main)
        } else {
            Arc::clone(&other)
        };
        waiters.push(tokio::spawn(async move {
            let mut won = None;
            while Instant::now() < give_up {
                if let Some(lease) = ok(store.try_acquire("abandoned", long).await, "try_acquire") {
                    assert!(won.is_none(), "one waiter took the same lock twice");
                    won = Some((Instant::now(), lease));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            won
        }));
    }
    let mut winners = Vec::new();
    for waiter in waiters {
        if let Some(win) = join(waiter).await {
            winners.push(win);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "expected exactly one waiter to take the abandoned lock"
    );
    let (won_at, lease) = winners.remove(0);
    let tolerance = Duration::from_millis(25);
    assert!(
        won_at + tolerance >= before + ttl,
        "the lock was taken over {:?} after it was acquired, before its ttl of {ttl:?}",
        won_at.duration_since(before)
    );
    lock_lost(
        main.refresh(&abandoned, ttl).await,
        "refresh of the abandoned lease",
    );
    lock_lost(
        main.release(&abandoned).await,
        "release of the abandoned lease",
    );
    ok(main.release(&lease).await, "release by the winner");
}

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

/// Cancelling [`lock`] while it waits (a timeout around it, or an aborted task) leaves
/// nothing held: once the holder releases, the lock is free at once.
pub async fn cancelled_wait_leaves_nothing_held(fixture: &Fixture) {
    let main = fixture.store().await;
    let other = fixture.open_another().await;
    let ttl = fixture.capabilities().ttl(Duration::from_secs(10));
    let opts = options(ttl);
    let holder = acquire(&*other, "cancel", ttl).await;
    for (i, wait) in [1u64, 3, 10, 30, 60, 120, 250].into_iter().enumerate() {
        let store = if i % 2 == 0 { &main } else { &other };
        match tokio::time::timeout(
            Duration::from_millis(wait),
            lock(as_locker(store), "cancel", &opts),
        )
        .await
        {
            Err(_elapsed) => {}
            Ok(Ok(guard)) => panic!("lock() took a held lock: {guard:?}"),
            Ok(Err(err)) => panic!("lock() failed while waiting: {err:?}"),
        }
    }
    let waiting = {
        let locker = as_locker(&main);
        let opts = opts.clone();
        tokio::spawn(async move { lock(locker, "cancel", &opts).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    waiting.abort();
    assert!(
        waiting.await.is_err_and(|err| err.is_cancelled()),
        "lock() finished although the lock was held"
    );
    // Let attempts that were in flight at cancellation finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok(other.release(&holder).await, "release by the holder");
    for store in [&main, &other] {
        let guard = match ok(
            try_lock(as_locker(store), "cancel", &opts).await,
            "try_lock",
        ) {
            Some(guard) => guard,
            None => panic!("a cancelled lock() left the lock held"),
        };
        ok(guard.release().await, "release");
    }
}

/// A lock won after a long wait still gets a whole lease: its deadline counts from the
/// win, not from the start of the wait, both in the guard and in the backend.
pub async fn late_winner_gets_full_lease(fixture: &Fixture) {
    let caps = fixture.capabilities().clone();
    let main = fixture.store().await;
    let other = fixture.open_another().await;
    let ttl = caps.ttl(Duration::from_secs(1));
    let wait = ttl + ttl / 2;
    // The holder must outlive the wait, whatever the backend's shortest lease.
    let long = caps.ttl(Duration::from_secs(10)).max(wait * 2);

    // Through lock(): the guard's lease.
    let holder = acquire(&*other, "late", long).await;
    let waiter = {
        let locker = as_locker(&main);
        let opts = options(ttl);
        tokio::spawn(async move {
            let guard = ok(lock(locker, "late", &opts).await, "lock");
            (guard, Instant::now())
        })
    };
    tokio::time::sleep(wait).await;
    ok(other.release(&holder).await, "release by the holder");
    let (guard, won_at) = join(waiter).await;
    let lease = guard.lease();
    assert_eq!(lease.ttl(), ttl, "the guard's lease has another ttl");
    assert!(
        lease.deadline() <= won_at + ttl,
        "the lease's deadline lies more than its ttl after the win"
    );
    assert!(
        lease.deadline() >= won_at + ttl * 3 / 4,
        "a lock won after waiting {wait:?} got a lease ending {:?} after the win, less than its ttl {ttl:?}",
        lease.deadline().saturating_duration_since(won_at)
    );
    ok(guard.release().await, "release by the late winner");

    // Through try_acquire: the backend's own expiry.
    let holder = acquire(&*other, "late-raw", long).await;
    let waiter = {
        let store = Arc::clone(&main);
        tokio::spawn(async move {
            loop {
                if let Some(lease) = ok(store.try_acquire("late-raw", ttl).await, "try_acquire") {
                    return (lease, Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(wait).await;
    ok(other.release(&holder).await, "release by the holder");
    let (lease, won_at) = join(waiter).await;
    tokio::time::sleep_until((won_at + ttl * 6 / 10).into()).await;
    assert_held(
        &*other,
        "late-raw",
        long,
        "60% into a lease won after a long wait",
    )
    .await;
    ok(main.release(&lease).await, "release by the late winner");
}

/// Cleaning expired locks never removes a live lease, and leaves an expired one free.
pub async fn clean_expired_locks_spares_live_ones(fixture: &Fixture) {
    let caps = fixture.capabilities().clone();
    let store = fixture.store().await;
    let short = caps.ttl(Duration::from_millis(200));
    let long = caps.ttl(Duration::from_secs(30)).max(short * 4);
    let live = acquire(&*store, "clean-live", long).await;
    acquire(&*store, "clean-dead", short).await;
    tokio::time::sleep(short + caps.lock_expiry_slack + Duration::from_millis(100)).await;

    let removed = ok(store.clean_expired_locks().await, "clean_expired_locks");
    assert!(
        removed <= 1,
        "cleaning removed {removed} locks, only one had expired"
    );
    assert_held(&*store, "clean-live", short, "after cleaning expired locks").await;
    let live = ok(
        store.refresh(&live, long).await,
        "refresh of a live lease after cleaning",
    );
    let again = acquire(&*store, "clean-dead", short).await;
    ok(store.release(&again).await, "release of the retaken lock");
    ok(store.release(&live).await, "release of the live lease");
    assert_eq!(
        ok(store.clean_expired_locks().await, "clean_expired_locks"),
        0,
        "nothing had expired the second time"
    );
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

/// How early a backend may let a lease go by its own clock: database clocks count in whole
/// milliseconds, and the wall clock they read can be slewed against the monotonic clock
/// the suite measures with.
const CLOCK_RESOLUTION: Duration = Duration::from_millis(5);

/// Timer precision granted when comparing a backend's expiry with local instants.
const TIMER_SLACK: Duration = Duration::from_millis(100);

/// Polls `store` for the lock `name` until it is taken, and returns the lease and the
/// instant its answer came. Panics when an attempt *started* after `latest` still finds
/// the lock held (so slow answers under load do not count against the backend).
async fn take_by(
    store: &dyn Store,
    name: &str,
    ttl: Duration,
    latest: Instant,
) -> (Lease, Instant) {
    loop {
        let asked = Instant::now();
        if let Some(lease) = ok(
            store.try_acquire(name, ttl).await,
            format_args!("try_acquire {name}"),
        ) {
            return (lease, Instant::now());
        }
        assert!(
            asked <= latest,
            "the lock {name} was still held {:?} after it should have been free",
            asked.duration_since(latest)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

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
            // acquisition was answered at the latest.
            let latest = before + ttl + caps.lock_expiry_slack + TIMER_SLACK;
            let (lease, _) = take_by(&*other, name, long, latest).await;
            lock_lost(
                guard.release().await,
                format_args!("{name}: release of the lost guard"),
            );
            ok(other.release(&lease).await, "release by the new holder");
        }));
    }
    for case in cases {
        join(case).await;
    }
}

/// Refreshes move the backend's expiry: after several refreshes with a long time to live
/// and a last one with a shorter time to live, the lock cannot be taken before that last
/// refresh's time to live has passed (counted from when it was sent), and can be taken
/// once it has passed (counted from its answer, plus the backend's expiry slack).
///
/// The time to live is the one the refreshed lease reports: a backend whose leases keep
/// their duration (Azure blob leases) reports it there.
pub async fn takeover_timing_after_refreshes(fixture: &Fixture) {
    let caps = fixture.capabilities().clone();
    let main = fixture.store().await;
    let other = fixture.open_another().await;
    let short = caps.ttl(Duration::from_millis(600));
    let long = short + (short / 2).max(Duration::from_secs(1));
    let mut lease = acquire(&*main, "timing", long).await;
    let own = lease.ttl();
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        lease = ok(
            main.refresh(&lease, long).await,
            format_args!("refresh {i}"),
        );
        assert_held(&*other, "timing", long, "between refreshes").await;
    }
    let sent = Instant::now();
    let lease = ok(
        main.refresh(&lease, short).await,
        "refresh with a shorter ttl",
    );
    let answered = Instant::now();
    let granted = lease.ttl();
    assert!(
        granted == short || granted == own,
        "the refreshed lease reports a ttl of {granted:?}, neither the {short:?} asked for \
         nor the {own:?} it was taken with"
    );
    let latest = answered + granted + caps.lock_expiry_slack + TIMER_SLACK;
    // The new holder keeps its lease until the end: a minute (the longest blob lease), so
    // an emulator that stalls on a busy machine does not let it run out first.
    let (taken, at) = take_by(&*other, "timing", caps.ttl(Duration::from_secs(60)), latest).await;
    assert!(
        at + CLOCK_RESOLUTION >= sent + granted,
        "the lock was taken {:?} after its last refresh was sent, before that refresh's \
         ttl of {granted:?}",
        at.duration_since(sent)
    );
    lock_lost(main.release(&lease).await, "release of the expired lease");
    ok(other.release(&taken).await, "release by the new holder");
}

/// Many rounds of [`lock`] on a free lock, dropped after a short delay (before, during or
/// after its request): each time, another instance gets the lock at once or after a short
/// bounded wait for the dropped attempt's own release, and nothing stays held.
pub async fn cancelled_lock_on_free_lock_mid_attempt(fixture: &Fixture) {
    const ROUNDS: u64 = 50;
    let caps = fixture.capabilities().clone();
    let main = fixture.store().await;
    let other = fixture.open_another().await;
    let ttl = caps.ttl(Duration::from_secs(10));
    let opts = options(ttl);
    // The dropped attempt may still have its acquisition and its release in flight: bound
    // the wait for them by this backend's own round trips, not by a fixed guess.
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        let started = Instant::now();
        let lease = acquire(&*main, "cancel-free", ttl).await;
        ok(main.release(&lease).await, "release");
        slowest = slowest.max(started.elapsed());
    }
    let bound = Duration::from_secs(1) + slowest * 10;
    for round in 0..ROUNDS {
        // 0 to 5 ms, spread over the range so some drops land mid-request.
        let delay = Duration::from_micros(round * 997 % 5_001);
        let (store, contender) = if round % 2 == 0 {
            (&main, &other)
        } else {
            (&other, &main)
        };
        match tokio::time::timeout(delay, lock(as_locker(store), "cancel-free", &opts)).await {
            Err(_dropped) => {}
            Ok(Ok(guard)) => ok(guard.release().await, "release of a lock() that finished"),
            Ok(Err(err)) => panic!("round {round}: lock() of a free lock failed: {err:?}"),
        }
        let dropped = Instant::now();
        let (lease, _) = take_by(&**contender, "cancel-free", ttl, dropped + bound).await;
        ok(contender.release(&lease).await, "release by the contender");
    }
    for store in [&main, &other] {
        let lease = acquire(&**store, "cancel-free", ttl).await;
        ok(store.release(&lease).await, "release");
    }
}

/// Cleaning expired locks spares a live lease even when little of it is left: cleaning
/// (from either instance) with about 300 ms to go removes nothing, and no takeover is
/// answered before the lease's deadline.
pub async fn clean_spares_lease_with_little_left(fixture: &Fixture) {
    let caps = fixture.capabilities().clone();
    let main = fixture.store().await;
    let other = fixture.open_another().await;
    let ttl = caps.min_lock_ttl.max(Duration::from_millis(600));
    let lease = acquire(&*main, "clean-close", ttl).await;
    let clean_at = lease.deadline() - Duration::from_millis(300);
    tokio::time::sleep_until(clean_at.into()).await;
    for (who, store) in [("holder", &main), ("other instance", &other)] {
        let removed = ok(store.clean_expired_locks().await, "clean_expired_locks");
        assert_eq!(
            removed,
            0,
            "cleaning by the {who} removed a lease with {:?} left",
            lease.remaining()
        );
    }
    if let Some(taken) = ok(
        other.try_acquire("clean-close", ttl).await,
        "try_acquire clean-close",
    ) {
        let at = Instant::now();
        assert!(
            at >= lease.deadline(),
            "the lock was taken {:?} before its lease's deadline, after cleaning",
            lease.deadline().duration_since(at)
        );
        ok(other.release(&taken).await, "release by the new holder");
    } else {
        // Still held, as it should be until its deadline: the holder lets it go (or finds
        // it already expired).
        let _ = main.release(&lease).await;
    }
}

/// A slow round trip of `locker`'s lock operations: the slowest of 8 acquire-and-release
/// pairs on a lock of its own (after one unmeasured pair, which may include connection
/// set-up and probes). Meant for [`Capabilities::with_lock_latency`](crate::Capabilities::with_lock_latency)
/// when a test starts, so lock timings follow the machine's load.
///
/// # Panics
///
/// When the backend fails or reports the fresh lock as held.
pub async fn measure_lock_latency(locker: &dyn Locker) -> Duration {
    const SAMPLES: usize = 8;
    let name = format!("latency/{}", LockToken::generate());
    let ttl = Duration::from_secs(30);
    let mut slowest = Duration::ZERO;
    for sample in 0..=SAMPLES {
        let started = Instant::now();
        let lease = match ok(locker.try_acquire(&name, ttl).await, "try_acquire") {
            Some(lease) => lease,
            None => panic!("measuring latency: the fresh lock {name} is held"),
        };
        ok(locker.release(&lease).await, "release");
        if sample > 0 {
            slowest = slowest.max(started.elapsed());
        }
    }
    slowest
}
