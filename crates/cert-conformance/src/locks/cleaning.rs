//! Lock cases about cleaning expired locks: it removes only leases that have run out.

use std::time::{Duration, Instant};

use super::{CLOCK_RESOLUTION, acquire, assert_held};
use crate::Fixture;
use crate::support::ok;

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

/// Cleaning expired locks spares a live lease even when little of it is left: cleaning
/// (from either instance) with well under a second to go removes nothing, and no takeover
/// is answered before the lease's deadline.
///
/// On a busy machine a sleep or a request can overrun into the lease's last moments,
/// where cleaning may rightly remove it. A cleaning that finished that late proves
/// nothing: the round is run again with a lease and a margin that grow, up to
/// ten rounds; a removal by a cleaning that finished in time always fails.
pub async fn clean_spares_lease_with_little_left(fixture: &Fixture) {
    let caps = fixture.capabilities().clone();
    let main = fixture.store().await;
    let other = fixture.open_another().await;
    for round in 0..CLEAN_ROUNDS {
        // 300 ms left at first, at most 900 ms: always well under a second.
        let left = Duration::from_millis(300 * (u64::from(round).min(2) + 1));
        let ttl = caps.min_lock_ttl.max(left * 2);
        let name = format!("clean-close/{round}");
        let lease = acquire(&*main, &name, ttl).await;
        tokio::time::sleep_until((lease.deadline() - left).into()).await;
        let mut conclusive = true;
        for (who, store) in [("holder", &main), ("other instance", &other)] {
            let removed = ok(store.clean_expired_locks().await, "clean_expired_locks");
            let finished = Instant::now();
            if finished + CLOCK_RESOLUTION >= lease.deadline() {
                conclusive = false;
                break;
            }
            assert_eq!(
                removed,
                0,
                "cleaning by the {who} removed a lease with {:?} left",
                lease.deadline().duration_since(finished)
            );
        }
        if !conclusive {
            let _ = main.release(&lease).await;
            continue;
        }
        if let Some(taken) = ok(
            other.try_acquire(&name, ttl).await,
            format_args!("try_acquire {name}"),
        ) {
            let at = Instant::now();
            assert!(
                at + CLOCK_RESOLUTION >= lease.deadline(),
                "the lock was taken {:?} before its lease's deadline, after cleaning",
                lease.deadline().duration_since(at)
            );
            ok(other.release(&taken).await, "release by the new holder");
        } else {
            // Still held, as it should be until its deadline: the holder lets it go (or
            // finds it already expired).
            let _ = main.release(&lease).await;
        }
        return;
    }
    panic!(
        "no cleaning finished before the lease's deadline in {CLEAN_ROUNDS} rounds \
         (each with 300 to 900 ms to spare): the machine or the backend is too slow to \
         check this property"
    );
}

/// How many rounds [`clean_spares_lease_with_little_left`] may take to get one cleaning
/// done before the lease's deadline.
const CLEAN_ROUNDS: u32 = 10;
