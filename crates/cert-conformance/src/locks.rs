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
    let long = caps.ttl(Duration::from_secs(10));
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
