//! The doctor's lock check: one lock acquired, held against a second acquisition,
//! refreshed, released and taken again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cert_core::{Error, Store};

use super::{Check, Status, check};

/// The lock the check takes. One fixed name, so that repeated runs leave at most one lock
/// entry behind on backends that keep an entry per name after its release (a lock blob on
/// Azure); two runs at once meet on it, and the one that finds it held says so.
const DOCTOR_LOCK: &str = "certstore-doctor";

/// How long the lock is held: a run that is killed while holding it holds up the next
/// runs' lock checks for at most this long.
const TTL: Duration = Duration::from_secs(20);

/// How long the check keeps trying to take the lock again after releasing it: another
/// doctor run may take it in between, and holds it only for its own few requests.
const REACQUIRE_WAIT: Duration = Duration::from_secs(2);

/// What the lock steps found.
enum Outcome {
    /// Every step behaved.
    Passed,
    /// Another doctor run holds the lock: nothing was checked.
    Busy,
    /// A step misbehaved.
    Problem(String),
}

pub(super) async fn lock_round_trip(opened: &certstore::Opened) -> Check {
    let store = &opened.store;
    let started = Instant::now();
    let result = async {
        let Some(lease) = store.try_acquire(DOCTOR_LOCK, TTL).await? else {
            return Ok(Outcome::Busy);
        };
        let second = store.try_acquire(DOCTOR_LOCK, TTL).await?;
        let excluded = second.is_none();
        if let Some(second) = second {
            let _ = store.release(&second).await;
        }
        let lease = store.refresh(&lease, TTL).await?;
        store.release(&lease).await?;
        let reacquired = reacquire(store).await?;
        Ok::<_, Error>(match (excluded, reacquired) {
            (true, true) => Outcome::Passed,
            (false, _) => Outcome::Problem(
                "a second acquisition succeeded while the lock was held".to_owned(),
            ),
            (_, false) => {
                Outcome::Problem("the lock could not be taken again after release".to_owned())
            }
        })
    }
    .await;
    match result {
        Ok(Outcome::Passed) => check(
            "lock",
            Status::Pass,
            format!(
                "acquire, exclusion, refresh and release in {} ms",
                started.elapsed().as_millis()
            ),
            "",
        ),
        Ok(Outcome::Busy) => check(
            "lock",
            Status::Warn,
            format!(
                "the lock {DOCTOR_LOCK} is held by another doctor run; acquire, exclusion, \
                 refresh and release were not checked"
            ),
            format!(
                "run doctor again once the other run is done (a lock left by a run that was \
                 killed expires within {} s)",
                TTL.as_secs()
            ),
        ),
        Ok(Outcome::Problem(problem)) => check(
            "lock",
            Status::Fail,
            problem,
            "the backend does not provide mutual exclusion; do not share it between nodes",
        ),
        Err(err) => check(
            "lock",
            Status::Fail,
            err.to_string(),
            "check the credentials allow writing lock entries",
        ),
    }
}

/// Takes the released lock again and releases it; false when it stayed taken for
/// [`REACQUIRE_WAIT`].
async fn reacquire(store: &Arc<dyn Store>) -> Result<bool, Error> {
    let deadline = Instant::now() + REACQUIRE_WAIT;
    loop {
        if let Some(again) = store.try_acquire(DOCTOR_LOCK, TTL).await? {
            store.release(&again).await?;
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
