//! Lock cases about exclusion, tokens and release: one holder at a time, across
//! instances, and only the holder's token can refresh or release.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cert_core::{Lease, LockToken, lock, try_lock};

use super::{acquire, as_locker, assert_held, join, options};
use crate::Fixture;
use crate::support::{assert_value, everything, lock_lost, ok};

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
    // Exclusion is what is tested, not expiry (every holder releases): a minute-long lease
    // keeps a server that stalls for seconds on a busy machine from ending one early.
    let opts = options(fixture.capabilities().ttl(Duration::from_secs(60)));
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
