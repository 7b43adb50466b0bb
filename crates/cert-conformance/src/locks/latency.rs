//! [`measure_lock_latency`]: how slow a backend's lock round trips are on this machine
//! right now.

use std::time::{Duration, Instant};

use cert_core::{LockToken, Locker};

use crate::support::ok;

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
