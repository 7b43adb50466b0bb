//! Cases about locks, by property: exclusion and tokens, expiry and takeover timing,
//! keep-alive, cancellation and cleaning (the cross-process case lives in `process`),
//! and the helpers they share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cert_core::{Lease, LockOptions, Locker, Store};
use tokio::task::JoinHandle;

use crate::support::ok;

mod cancellation;
mod cleaning;
mod exclusion;
mod expiry;
mod keep_alive;
mod latency;

pub use cancellation::{
    cancelled_lock_on_free_lock_mid_attempt, cancelled_wait_leaves_nothing_held,
};
pub use cleaning::{clean_expired_locks_spares_live_ones, clean_spares_lease_with_little_left};
pub use exclusion::{
    foreign_token_refused, lock_mutual_exclusion, lock_names_apart_from_keys, try_lock_while_held,
};
pub use expiry::{
    abandoned_lock_taken_over_by_one, expired_lease_refused, late_winner_gets_full_lease,
    takeover_timing_after_refreshes,
};
pub use keep_alive::{keep_alive_holds_lock, lost_lock_noticed_within_ttl};
pub use latency::measure_lock_latency;

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
pub(crate) async fn acquire(store: &dyn Store, name: &str, ttl: Duration) -> Lease {
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
