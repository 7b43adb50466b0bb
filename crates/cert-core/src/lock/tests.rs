//! Unit tests of the lock primitives, the wait loop and the keep-alive.

#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn tokens_are_unique_and_hex() {
    let a = LockToken::generate();
    let b = LockToken::generate();
    assert_ne!(a, b);
    assert_eq!(a.as_str().len(), 32);
    assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn lease_deadline_counts_from_start() {
    let start = Instant::now();
    let lease = Lease::new("n", LockToken::generate(), Duration::from_secs(5), start);
    assert_eq!(lease.deadline(), start + Duration::from_secs(5));
    assert!(!lease.is_expired());
    let old = Lease::new("n", LockToken::generate(), Duration::ZERO, start);
    assert!(old.is_expired());
}

/// A backend whose refresh lands at once but is acknowledged slowly, and which only
/// releases a lease whose last refresh it acknowledged (as a backend conditioning the
/// release on the version its refresh wrote does).
#[derive(Debug, Default)]
struct SlowAck {
    /// Refreshes applied by the "server" / acknowledged to the client.
    applied: std::sync::atomic::AtomicU32,
    acknowledged: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl Locker for SlowAck {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        Ok(Some(Lease::new(
            name,
            LockToken::generate(),
            ttl,
            Instant::now(),
        )))
    }
    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        use std::sync::atomic::Ordering::SeqCst;
        let started = Instant::now();
        let version = self.applied.fetch_add(1, SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.acknowledged.store(version, SeqCst);
        Ok(lease.renewed(ttl, started))
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.applied.load(SeqCst) == self.acknowledged.load(SeqCst) {
            Ok(())
        } else {
            Err(Error::LockLost {
                name: lease.name().to_owned(),
            })
        }
    }
}

#[tokio::test]
async fn release_waits_for_a_refresh_under_way() {
    let backend = Arc::new(SlowAck::default());
    let options = LockOptions::default().with_ttl(Duration::from_millis(600));
    let guard = lock(backend.clone(), "slow", &options).await.unwrap();
    // The keep-alive refreshes after 200 ms; its answer comes 200 ms later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        backend.applied.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a refresh is under way"
    );
    guard.release().await.unwrap();
    assert_eq!(
        backend
            .acknowledged
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

/// A backend whose acquisitions fail `failures` times with `error` before they
/// succeed, and whose refreshes never answer.
#[derive(Debug)]
struct Flaky {
    failures: std::sync::atomic::AtomicU32,
    retryable: bool,
}

#[async_trait]
impl Locker for Flaky {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        use std::sync::atomic::Ordering::SeqCst;
        let left = self.failures.load(SeqCst);
        if left > 0 {
            self.failures.store(left - 1, SeqCst);
            let io = std::io::Error::other("flaky");
            return Err(if self.retryable {
                Error::unavailable("flaky", io)
            } else {
                Error::backend("flaky", io)
            });
        }
        Ok(Some(Lease::new(
            name,
            LockToken::generate(),
            ttl,
            Instant::now(),
        )))
    }
    async fn refresh(&self, _lease: &Lease, _ttl: Duration) -> Result<Lease> {
        std::future::pending().await
    }
    async fn release(&self, _lease: &Lease) -> Result<()> {
        Ok(())
    }
}

fn flaky(failures: u32, retryable: bool) -> Arc<Flaky> {
    Arc::new(Flaky {
        failures: std::sync::atomic::AtomicU32::new(failures),
        retryable,
    })
}

#[tokio::test]
async fn lock_waits_out_transient_errors_only() {
    let options = LockOptions::default()
        .with_ttl(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(5));
    let guard = lock(flaky(5, true), "transient", &options).await.unwrap();
    assert!(!guard.is_lost());
    drop(guard);
    let err = lock(flaky(1, false), "permanent", &options)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    // Still failing at the timeout: the last transient error explains it.
    let short = options.clone().with_timeout(Duration::from_millis(50));
    let err = lock(flaky(u32::MAX, true), "down", &short)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn unanswered_refresh_loses_the_lease_at_its_deadline() {
    let ttl = Duration::from_millis(300);
    let started = Instant::now();
    let guard = lock(
        flaky(0, true),
        "stalled",
        &LockOptions::default().with_ttl(ttl),
    )
    .await
    .unwrap();
    tokio::time::timeout(ttl + Duration::from_secs(3), guard.lost())
        .await
        .expect("the guard did not notice its stalled refresh");
    assert!(started.elapsed() + Duration::from_millis(5) >= ttl);
    assert!(guard.is_lost());
    // Releasing does not wait for the stalled request either.
    tokio::time::timeout(Duration::from_secs(1), guard.release())
        .await
        .expect("release hung on a stalled refresh")
        .unwrap();
}

#[test]
fn options_builders() {
    let opts = LockOptions::default()
        .with_ttl(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(1))
        .with_backoff(Duration::from_millis(9), Duration::from_millis(1));
    assert_eq!(opts.ttl, Duration::from_secs(3));
    assert_eq!(opts.timeout, Some(Duration::from_secs(1)));
    assert_eq!(opts.max_backoff, Duration::from_millis(9));
}

/// A lease that reached the attempt's channel but not its caller (the caller's future was
/// dropped between the answer being sent and being read) is released at once, not left
/// held until its lease expires.
#[tokio::test(flavor = "current_thread")]
async fn a_lease_sent_to_a_dropped_caller_is_released() {
    let locker: Arc<dyn Locker> = Arc::new(crate::MemoryStorage::new());
    let options = LockOptions::default().with_ttl(Duration::from_secs(60));
    for entry in ["lock", "try_lock"] {
        let name = format!("delivered/{entry}");
        let mut waiting: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> = if entry
            == "lock"
        {
            Box::pin({
                let (locker, name, options) = (Arc::clone(&locker), name.clone(), options.clone());
                async move {
                    let _ = lock(locker, &name, &options).await;
                }
            })
        } else {
            Box::pin({
                let (locker, name, options) = (Arc::clone(&locker), name.clone(), options.clone());
                async move {
                    let _ = try_lock(locker, &name, &options).await;
                }
            })
        };
        // First poll: the attempt's task is spawned and the caller waits for its answer.
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        // The task takes the lock and sends the lease; the caller leaves before reading it.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        drop(waiting);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let taken = locker
            .try_acquire(&name, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(
            taken.is_some(),
            "{entry}: the lease sent to a dropped caller was left held"
        );
    }
}
