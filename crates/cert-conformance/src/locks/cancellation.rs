//! Lock cases about cancellation: dropping a [`lock`](cert_core::lock) call, while it
//! waits or mid-attempt, leaves nothing held.

use std::time::{Duration, Instant};

use cert_core::{lock, try_lock};

use super::{acquire, as_locker, options, take_by};
use crate::Fixture;
use crate::support::ok;

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
