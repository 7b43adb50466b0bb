//! Cases about fenced writes: [`Storage::store_fenced`] and [`Storage::delete_fenced`]
//! change storage only while the lease they are given still holds its lock.
//!
//! [`Storage::store_fenced`]: cert_core::Storage::store_fenced
//! [`Storage::delete_fenced`]: cert_core::Storage::delete_fenced

use std::time::{Duration, Instant};

use cert_core::{Lease, LockToken};

use crate::Fixture;
use crate::locks::acquire;
use crate::support::{assert_value, everything, invalid_key, lock_lost, not_found, ok};

/// The lease `old` (same name and token) with a deadline `ttl` from now: what a process
/// paused past its lease, whose local clock did not see the pause, believes it holds.
fn stale_but_fresh(old: &Lease, ttl: Duration) -> Lease {
    Lease::new(old.name(), old.token().clone(), ttl, Instant::now())
}

/// While a lease is held, fenced writes behave like plain ones: through the instance that
/// took the lease and through another one, creating, overwriting, deleting a key and a
/// prefix, `NotFound` for an absent key and `InvalidKey` for a bad one; the lease is still
/// held and refreshable afterwards.
pub async fn fenced_write_while_held(fixture: &Fixture) {
    let s = fixture.store().await;
    let other = fixture.open_another().await;
    let ttl = fixture.capabilities().ttl(Duration::from_secs(30));
    let lease = acquire(&*s, "fence-held", ttl).await;

    ok(
        s.store_fenced("fenced/a", b"one", &lease).await,
        "store_fenced of a new key while the lease is held",
    );
    assert_value(s.load("fenced/a").await, "fenced/a", b"one");
    ok(
        other.store_fenced("fenced/a", b"two", &lease).await,
        "store_fenced over a key, through another instance",
    );
    assert_value(s.load("fenced/a").await, "fenced/a", b"two");
    ok(
        s.store_fenced("fenced/dir/b", b"below", &lease).await,
        "store_fenced of a nested key",
    );
    ok(
        s.store_fenced("fenced/dir/c", b"", &lease).await,
        "store_fenced of an empty value",
    );
    assert_value(s.load("fenced/dir/c").await, "fenced/dir/c", b"");
    invalid_key(
        s.store_fenced("/fenced", b"x", &lease).await,
        "/fenced",
        "store_fenced",
    );
    invalid_key(
        s.delete_fenced("fenced/", &lease).await,
        "fenced/",
        "delete_fenced",
    );

    ok(
        other.delete_fenced("fenced/a", &lease).await,
        "delete_fenced of a key while the lease is held",
    );
    not_found(s.load("fenced/a").await, "load after delete_fenced");
    not_found(
        s.delete_fenced("fenced/a", &lease).await,
        "delete_fenced of an absent key",
    );
    ok(
        s.delete_fenced("fenced/dir", &lease).await,
        "delete_fenced of a prefix",
    );
    assert!(
        everything(&*s).await.is_empty(),
        "delete_fenced of a prefix left keys behind"
    );

    let lease = ok(
        s.refresh(&lease, ttl).await,
        "refresh after fenced writes (the lease must still be held)",
    );
    ok(s.release(&lease).await, "release after fenced writes");
}

/// A lease that expired and was taken over by another holder can no longer write: its
/// fenced store and delete fail with [`Error::LockLost`](cert_core::Error::LockLost) and
/// leave the stored values as they were, while the new holder writes freely.
///
/// When the backend fences on the server ([`Capabilities::fenced_writes`]), the same
/// holds for the old token carried by a lease whose local deadline looks fresh (a process
/// that was paused and whose clock did not notice), for a token that never held the lock,
/// and for a released lock.
///
/// [`Capabilities::fenced_writes`]: crate::Capabilities::fenced_writes
pub async fn fenced_write_refused_after_takeover(fixture: &Fixture) {
    let caps = fixture.capabilities().clone();
    let s = fixture.store().await;
    let other = fixture.open_another().await;
    let short = caps.min_lock_ttl;
    let long = caps.ttl(Duration::from_secs(30));
    ok(
        s.store("fence/value", b"original").await,
        "store fence/value",
    );
    ok(
        s.store("fence/doomed/x", b"keep").await,
        "store fence/doomed/x",
    );
    let check_unchanged = || async {
        assert_value(s.load("fence/value").await, "fence/value", b"original");
        assert_value(
            other.load("fence/doomed/x").await,
            "fence/doomed/x",
            b"keep",
        );
    };

    let taken = Instant::now();
    let old = acquire(&*s, "fence-lock", short).await;
    // Wait out the lease and the backend's slack, then keep trying: a busy machine may
    // answer late, but the takeover must come.
    tokio::time::sleep(caps.expiry(short)).await;
    let give_up = taken + caps.expiry(short) * 3 + Duration::from_secs(5);
    let new = loop {
        if let Some(lease) = ok(other.try_acquire("fence-lock", long).await, "try_acquire") {
            break lease;
        }
        assert!(
            Instant::now() < give_up,
            "an expired lock (ttl {short:?}, slack {:?}) could not be taken over",
            caps.lock_expiry_slack
        );
        tokio::time::sleep(short / 4).await;
    };

    // The old lease as its holder knows it: the local deadline has passed.
    lock_lost(
        s.store_fenced("fence/value", b"stale", &old).await,
        "store_fenced with a lease that expired and was taken over",
    );
    lock_lost(
        s.delete_fenced("fence/doomed", &old).await,
        "delete_fenced with a lease that expired and was taken over",
    );
    check_unchanged().await;

    if caps.fenced_writes {
        // Only a fence judged by the backend refuses these: locally they look fresh.
        let stale = stale_but_fresh(&old, long);
        let foreign = Lease::new("fence-lock", LockToken::generate(), long, Instant::now());
        for store in [&s, &other] {
            for (lease, what) in [
                (&stale, "a taken-over token"),
                (&foreign, "a foreign token"),
            ] {
                lock_lost(
                    store.store_fenced("fence/value", b"stale", lease).await,
                    format_args!("store_fenced with {what} and a fresh local deadline"),
                );
                lock_lost(
                    store.delete_fenced("fence/doomed", lease).await,
                    format_args!("delete_fenced with {what} and a fresh local deadline"),
                );
                lock_lost(
                    store.store_fenced("fence/new-key", b"stale", lease).await,
                    format_args!("store_fenced of a new key with {what}"),
                );
            }
        }
        not_found(
            s.load("fence/new-key").await,
            "a refused fenced store created its key",
        );
        check_unchanged().await;
    }

    // The stale attempts did not disturb the new holder, who writes freely.
    let new = ok(other.refresh(&new, long).await, "refresh by the new holder");
    ok(
        other.store_fenced("fence/value", b"new", &new).await,
        "store_fenced by the new holder",
    );
    assert_value(s.load("fence/value").await, "fence/value", b"new");
    ok(
        s.delete_fenced("fence/doomed", &new).await,
        "delete_fenced by the new holder, through another instance",
    );
    not_found(s.load("fence/doomed/x").await, "load after delete_fenced");
    ok(other.release(&new).await, "release by the new holder");

    if caps.fenced_writes {
        // A released lock fences out its last holder too, whatever its local deadline.
        let released = stale_but_fresh(&new, long);
        lock_lost(
            s.store_fenced("fence/value", b"late", &released).await,
            "store_fenced with a released lease",
        );
        lock_lost(
            s.delete_fenced("fence/value", &released).await,
            "delete_fenced with a released lease",
        );
        assert_value(s.load("fence/value").await, "fence/value", b"new");
    }
}
