//! Lock cases about expiry and takeover timing: a lease that runs out can be taken over,
//! not before its time to live, by exactly one contender, and a lease counts from when
//! it was won or last refreshed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cert_core::lock;

use super::{
    CLOCK_RESOLUTION, TIMER_SLACK, acquire, as_locker, assert_held, join, options, take_by,
};
use crate::Fixture;
use crate::support::{lock_lost, ok};

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
