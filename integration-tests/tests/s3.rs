//! The S3 backend against the moto server named by `CERTSTORE_TEST_S3_URL` (skipped loudly
//! when it is not set): the conformance suite, a takeover race on one expired lock, a
//! refresh whose answer was lost, a server that ignores conditional writes, and a private
//! server stopped mid-run.
#![allow(clippy::unwrap_used)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cert_conformance::{Capabilities, conformance_tests};
use cert_core::{Error, Lease, LockOptions, Locker, Storage, lock};
use cert_s3::{S3Config, S3Storage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const VAR: &str = "CERTSTORE_TEST_S3_URL";
/// One bucket shared by every test; each test works below a prefix of its own.
const BUCKET: &str = "certstore-tests";

fn s3_url() -> String {
    integration_tests::service_url(VAR).unwrap_or_default()
}

fn config(endpoint: &str, prefix: &str) -> S3Config {
    S3Config::new(BUCKET)
        .with_prefix(prefix)
        .with_region("us-east-1")
        .with_endpoint(endpoint)
        .with_path_style(true)
        .with_static_credentials("certstore", "certstore-secret", None)
}

async fn open(endpoint: &str, prefix: &str) -> S3Storage {
    let storage = S3Storage::connect(config(endpoint, prefix)).await.unwrap();
    storage.ensure_bucket().await.unwrap();
    storage
}

/// The slow round trip of a lock operation on the server right now (zero without a
/// server), measured once per process: lock timings in these tests follow it, so a busy
/// machine makes them slower, not flaky.
fn lock_latency() -> Duration {
    static LATENCY: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *LATENCY.get_or_init(|| {
        let Some(url) = integration_tests::service_url(VAR) else {
            return Duration::ZERO;
        };
        // On a thread of its own: the caller may be inside a runtime (a `#[tokio::test]`)
        // or not (the conformance macro asks for capabilities before starting one).
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let storage = open(&url, &integration_tests::unique_name("latency")).await;
                cert_conformance::measure_lock_latency(&storage).await
            })
        })
        .join()
        .unwrap()
    })
}

conformance_tests! {
    open: |ns: String| async move { open(&s3_url(), &ns).await },
    // Expiry is judged from one-second HTTP dates: a takeover comes at most 2 s late.
    capabilities: Capabilities::default()
        .with_lock_latency(lock_latency())
        .with_list_keys(10_000)
        // An emulator on a busy machine may take minutes over the largest cases.
        .with_case_timeout(Duration::from_secs(600))
        .with_lock_expiry_slack(Duration::from_secs(2))
        // Last-Modified is an HTTP date: whole seconds.
        .with_timestamp_resolution(Duration::from_secs(1))
        .without_fenced_writes(),
    enabled: || integration_tests::service_url(VAR).is_some(),
}

/// Several waiters on separate clients race to take over one expired lock: in every
/// round exactly one wins, and the abandoned lease can neither refresh nor release.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_lock_takeover_race_has_one_winner() {
    const WAITERS: usize = 12;
    const ROUNDS: usize = 6;
    let Some(url) = integration_tests::service_url(VAR) else {
        return;
    };
    let prefix = integration_tests::unique_name("race");
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Arc::new(open(&url, &prefix).await));
    }
    // Timings follow the server's latency: under load a waiter's poll takes longer, and
    // the winner's lease must outlast the other waiters' last polls.
    let scaled = lock_latency() * Capabilities::LATENCY_FACTOR;
    let ttl = Duration::from_millis(200).max(scaled);
    let long = Duration::from_secs(30).max(scaled * 4);
    let window = Duration::from_secs(4).max(scaled * 2);
    for round in 0..ROUNDS {
        let name = format!("race/{round}");
        let abandoned = stores[0].try_acquire(&name, ttl).await.unwrap().unwrap();
        // Even rounds: every waiter polls from the start and they meet the expiry
        // together. Odd rounds: they wait until it is surely expired, then all write at
        // once.
        let start_at = if round % 2 == 0 {
            Instant::now()
        } else {
            Instant::now() + ttl + Duration::from_millis(2_300)
        };
        let give_up = Instant::now() + ttl + window;
        let barrier = Arc::new(tokio::sync::Barrier::new(WAITERS));
        let mut waiters = Vec::new();
        for w in 0..WAITERS {
            let store = Arc::clone(&stores[w % stores.len()]);
            let name = name.clone();
            let barrier = Arc::clone(&barrier);
            waiters.push(tokio::spawn(async move {
                tokio::time::sleep_until(start_at.into()).await;
                barrier.wait().await;
                while Instant::now() < give_up {
                    if let Some(lease) = store.try_acquire(&name, long).await.unwrap() {
                        return Some((w, lease));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                None
            }));
        }
        let mut winners: Vec<(usize, Lease)> = Vec::new();
        for waiter in waiters {
            if let Some(win) = waiter.await.unwrap() {
                winners.push(win);
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: expected exactly one winner, got {}",
            winners.len()
        );
        let (w, lease) = winners.remove(0);
        assert!(matches!(
            stores[0].refresh(&abandoned, long).await,
            Err(Error::LockLost { .. })
        ));
        assert!(matches!(
            stores[0].release(&abandoned).await,
            Err(Error::LockLost { .. })
        ));
        let holder = &stores[w % stores.len()];
        let lease = holder.refresh(&lease, long).await.unwrap();
        holder.release(&lease).await.unwrap();
        assert!(stores[1].try_acquire(&name, ttl).await.unwrap().is_some());
    }
}

/// A refresh that the server applied but whose answer never arrived (a request timed out
/// on the client) leaves the holder with a stale ETag. The lease is still the holder's:
/// its next refresh and its release must succeed, and another node still cannot take the
/// lock in between. The lost answer is played by a second client refreshing the same
/// lease, which rewrites the object under a new ETag the first never sees.
#[tokio::test]
async fn a_refresh_whose_answer_was_lost_keeps_the_lease() {
    let Some(url) = integration_tests::service_url(VAR) else {
        return;
    };
    let prefix = integration_tests::unique_name("lost-answer");
    let holder = open(&url, &prefix).await;
    let elsewhere = open(&url, &prefix).await;
    let ttl = Duration::from_secs(30).max(lock_latency() * Capabilities::LATENCY_FACTOR);
    for (round, release_first) in [(0, true), (1, false)] {
        let name = format!("lost-answer/{round}");
        let lease = holder.try_acquire(&name, ttl).await.unwrap().unwrap();
        let unheard = elsewhere.refresh(&lease, ttl).await.unwrap();
        assert_eq!(unheard.token(), lease.token());
        assert!(elsewhere.try_acquire(&name, ttl).await.unwrap().is_none());
        let lease = if release_first {
            lease
        } else {
            holder.refresh(&lease, ttl).await.unwrap()
        };
        holder.release(&lease).await.unwrap();
        let next = elsewhere.try_acquire(&name, ttl).await.unwrap();
        assert!(next.is_some(), "round {round}: the release freed the lock");
        elsewhere.release(&next.unwrap()).await.unwrap();
    }
}

/// A tiny HTTP server that answers 200 with an ETag to every request, ignoring
/// conditional headers, and records the request lines it saw.
async fn careless_server() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut served = 0u64;
                loop {
                    // Read one request head, then its body by Content-Length.
                    let head_end = loop {
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
                    let length: usize = head
                        .lines()
                        .filter_map(|line| line.split_once(':'))
                        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, value)| value.trim().parse().ok())
                        .unwrap_or(0);
                    while buffer.len() < head_end + length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buffer.drain(..head_end + length);
                    log.lock()
                        .unwrap()
                        .push(head.lines().next().unwrap_or_default().to_owned());
                    served += 1;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nETag: \"etag{served}\"\r\nContent-Length: 0\r\n\r\n"
                    );
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{address}"), seen)
}

/// On a server that ignores `If-None-Match`, locking fails with a clear error and no lock
/// object is ever written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_ignoring_conditional_writes_is_refused() {
    let (endpoint, seen) = careless_server().await;
    let storage = S3Storage::connect(config(&endpoint, "careless"))
        .await
        .unwrap();
    // Plain storage still works against it.
    storage.store("a/b", b"value").await.unwrap();
    for _ in 0..2 {
        match storage
            .try_acquire("issue/example.com", Duration::from_secs(10))
            .await
        {
            Err(err @ Error::Backend { backend: "s3", .. }) => {
                let text = err.to_string();
                assert!(text.contains("conditional writes"), "unclear error: {text}");
            }
            other => panic!("expected a clear error from a careless server, got {other:?}"),
        }
    }
    let locker: Arc<dyn Locker> = Arc::new(storage.clone());
    let waited = tokio::time::timeout(
        Duration::from_secs(10),
        lock(locker, "issue/example.com", &LockOptions::default()),
    )
    .await
    .expect("lock() must fail, not wait, on a careless server");
    assert!(waited.is_err(), "lock() on a careless server must fail");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|line| line.contains(".certstore-probe")),
        "no probe was sent: {seen:?}"
    );
    assert!(
        !seen.iter().any(|line| line.contains(".certstore-locks")),
        "a lock object was written to a careless server: {seen:?}"
    );
}

/// The moto server binary installed by `services/start.d/s3.sh`.
fn moto_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("CERTSTORE_TEST_MOTO_SERVER") {
        return Some(PathBuf::from(path));
    }
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("services/.run/venv-moto/bin/moto_server");
    path.exists().then_some(path)
}

/// A private moto server, killed on drop.
struct PrivateMoto {
    child: Child,
}

impl PrivateMoto {
    fn start(binary: &PathBuf, port: u16) -> Self {
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "private moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        PrivateMoto { child }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_unavailable<T: std::fmt::Debug>(result: &cert_core::Result<T>) -> bool {
    matches!(result, Err(Error::Unavailable { backend: "s3", .. }))
}

/// A private server stopped mid-run: operations end with `Unavailable` within the retry
/// bound (no panic, no hang); once it is back, the same storage works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_stopped_mid_run_is_unavailable_then_recovers() {
    if integration_tests::service_url(VAR).is_none() {
        return;
    }
    let Some(binary) = moto_binary() else {
        assert!(
            !integration_tests::services_required(),
            "moto_server not found: run integration-tests/services/start.d/s3.sh"
        );
        eprintln!("SKIPPED: moto_server not found (run integration-tests/services/start.d/s3.sh)");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let server = PrivateMoto::start(&binary, port);
    let storage = Arc::new(
        S3Storage::connect(
            config(&endpoint, "fault")
                .with_retries(3, Duration::from_millis(50), Duration::from_millis(200))
                .with_timeouts(Duration::from_secs(1), Duration::from_secs(5)),
        )
        .await
        .unwrap(),
    );
    storage.ensure_bucket().await.unwrap();
    storage.store("k", b"before").await.unwrap();
    assert_eq!(storage.load("k").await.unwrap(), b"before");

    // Writers run while the server goes away.
    let writer = {
        let storage = Arc::clone(&storage);
        tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                let result = storage.store(&format!("w/{i}"), b"v").await;
                match result {
                    Ok(()) => i += 1,
                    Err(err) => return (i, err),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop();
    let stopped = Instant::now();
    let (written, err) = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("a store hung past the retry bound")
        .unwrap();
    assert!(
        matches!(err, Error::Unavailable { backend: "s3", .. }),
        "after {written} writes: expected Unavailable, got {err:?}"
    );
    assert!(err.is_retryable());
    for _ in 0..2 {
        let started = Instant::now();
        assert!(is_unavailable(&storage.load("k").await));
        assert!(is_unavailable(&storage.list("", true).await));
        assert!(is_unavailable(
            &storage.try_acquire("l", Duration::from_secs(5)).await
        ));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "failing took {:?}",
            started.elapsed()
        );
    }
    assert!(stopped.elapsed() < Duration::from_secs(60));

    // Back again (moto keeps nothing across restarts: the bucket is created anew).
    let server = PrivateMoto::start(&binary, port);
    storage.ensure_bucket().await.unwrap();
    storage.store("k", b"after").await.unwrap();
    assert_eq!(storage.load("k").await.unwrap(), b"after");
    let lease = storage
        .try_acquire("l", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("a free lock after the restart");
    storage.release(&lease).await.unwrap();
    server.stop();
}
