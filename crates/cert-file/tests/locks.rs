//! Lock behaviour of the file backend: exactly one winner when many racers (threads and
//! processes) take over a stale lock, old holders never clobber new ones, stale guards
//! left by crashed processes are broken.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cert_core::{Error, Lease, LockOptions, Locker, lock};
use cert_file::FileStorage;

const ROLE: &str = "CERTSTORE_FILE_TEST_ROLE";
const ROOT: &str = "CERTSTORE_FILE_TEST_ROOT";
const START: &str = "CERTSTORE_FILE_TEST_START";
const LOCK: &str = "race/stale";

/// Runs a future to completion on this thread. Without a tokio runtime the file backend
/// does its work inline, so racing threads race for real.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn storage(root: &Path) -> FileStorage {
    FileStorage::new(root).with_clock_skew_tolerance(Duration::ZERO)
}

/// Writes an expired lease by hand, as a crashed holder would have left it.
fn plant_expired_lock(root: &Path, name: &str) {
    let path = root.join(format!(".certstore-locks/{name}.lock"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let expired = unix_ms() - 10_000;
    std::fs::write(
        &path,
        format!("certstore-lock 1\ntoken deadbeef\nexpires {expired}\n"),
    )
    .unwrap();
}

/// `threads` racers in this process, released together, each with its own instance.
fn race_threads(root: &Path, threads: usize, start: Option<u64>) -> Vec<Lease> {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let storage = storage(root);
            std::thread::spawn(move || {
                barrier.wait();
                if let Some(start) = start {
                    while unix_ms() < start {
                        std::hint::spin_loop();
                    }
                }
                block_on(storage.try_acquire(LOCK, Duration::from_secs(30))).unwrap()
            })
        })
        .collect();
    handles
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect()
}

#[test]
fn stale_lock_takeover_has_one_winner_among_threads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for round in 0..100 {
        plant_expired_lock(root, LOCK);
        let winners = race_threads(root, 8, None);
        assert_eq!(winners.len(), 1, "round {round}");
        // The winner really holds it: nobody else gets in, and it can release.
        let other = storage(root);
        assert!(
            block_on(other.try_acquire(LOCK, Duration::from_secs(1)))
                .unwrap()
                .is_none()
        );
        block_on(other.release(&winners[0])).unwrap();
    }
}

#[test]
fn short_ttl_holder_that_stops_refreshing_is_taken_over_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for round in 0..30 {
        let holder = storage(root);
        let old = block_on(holder.try_acquire(LOCK, Duration::from_millis(5)))
            .unwrap()
            .unwrap();
        std::thread::sleep(Duration::from_millis(10));
        let winners = race_threads(root, 6, None);
        assert_eq!(winners.len(), 1, "round {round}");
        // The old holder can neither refresh nor release the new holder's lease.
        assert!(matches!(
            block_on(holder.refresh(&old, Duration::from_secs(30))),
            Err(Error::LockLost { .. })
        ));
        assert!(matches!(
            block_on(holder.release(&old)),
            Err(Error::LockLost { .. })
        ));
        let renewed = block_on(holder.refresh(&winners[0], Duration::from_secs(30))).unwrap();
        assert_eq!(renewed.token(), winners[0].token());
        block_on(holder.release(&renewed)).unwrap();
    }
}

/// Child role: race for the lock with a few threads at the agreed instant and print how
/// many won.
fn racer(root: &str, start: u64) -> ! {
    let won = race_threads(Path::new(root), 3, Some(start)).len();
    println!("\nwon {won}");
    std::process::exit(0);
}

#[test]
fn stale_lock_takeover_has_one_winner_among_processes_and_threads() {
    if std::env::var(ROLE).as_deref() == Ok("racer") {
        racer(
            &std::env::var(ROOT).unwrap(),
            std::env::var(START).unwrap().parse().unwrap(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().to_owned();
    for round in 0..10 {
        plant_expired_lock(&root, LOCK);
        let start = unix_ms() + 400;
        let children: Vec<_> = (0..4)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .args([
                        "stale_lock_takeover_has_one_winner_among_processes_and_threads",
                        "--exact",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(ROLE, "racer")
                    .env(ROOT, &root)
                    .env(START, start.to_string())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut winners = race_threads(&root, 3, Some(start)).len();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            let text = String::from_utf8(out.stdout).unwrap();
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("won "))
                .expect("racer output");
            winners += line.parse::<usize>().unwrap();
        }
        assert_eq!(winners, 1, "round {round}");
        std::fs::remove_file(root.join(format!(".certstore-locks/{LOCK}.lock"))).unwrap();
    }
}

#[test]
fn a_fresh_guard_blocks_takeover_and_a_stale_one_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let s = FileStorage::new(root)
        .with_clock_skew_tolerance(Duration::ZERO)
        .with_stale_guard_after(Duration::from_millis(200));
    plant_expired_lock(root, "g");
    let guard = root.join(".certstore-locks/g.lock.guard");
    std::fs::write(&guard, b"").unwrap();
    // Someone is taking it over right now: wait.
    assert!(
        block_on(s.try_acquire("g", Duration::from_secs(5)))
            .unwrap()
            .is_none()
    );
    assert!(guard.exists());
    // That someone crashed long ago.
    let old = SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&guard)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let lease = block_on(s.try_acquire("g", Duration::from_secs(5)))
        .unwrap()
        .expect("stale guard broken, lock taken over");
    assert!(!guard.exists());
    // Release works past a stale guard too.
    std::fs::write(&guard, b"").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&guard)
        .unwrap()
        .set_modified(old)
        .unwrap();
    block_on(s.release(&lease)).unwrap();
    let lock_dir = root.join(".certstore-locks");
    let names: Vec<_> = std::fs::read_dir(&lock_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
}

#[test]
fn expiry_waits_for_the_clock_skew_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let s = FileStorage::new(root).with_clock_skew_tolerance(Duration::from_millis(300));
    let old = block_on(s.try_acquire("t", Duration::from_millis(50)))
        .unwrap()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Expired for its holder...
    assert!(matches!(
        block_on(s.refresh(&old, Duration::from_secs(1))),
        Err(Error::LockLost { .. })
    ));
    // ...but not yet free for others.
    assert!(
        block_on(s.try_acquire("t", Duration::from_secs(1)))
            .unwrap()
            .is_none()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        block_on(s.try_acquire("t", Duration::from_secs(1)))
            .unwrap()
            .is_some()
    );
}

#[test]
fn foreign_tokens_and_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    let lease = block_on(s.try_acquire("n", Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    let forged = Lease::new(
        "n",
        cert_core::LockToken::generate(),
        Duration::from_secs(5),
        std::time::Instant::now(),
    );
    assert!(matches!(
        block_on(s.release(&forged)),
        Err(Error::LockLost { .. })
    ));
    assert!(matches!(
        block_on(s.refresh(&forged, Duration::from_secs(5))),
        Err(Error::LockLost { .. })
    ));
    let never = Lease::new(
        "never/taken",
        cert_core::LockToken::generate(),
        Duration::from_secs(5),
        std::time::Instant::now(),
    );
    assert!(matches!(
        block_on(s.release(&never)),
        Err(Error::LockLost { .. })
    ));
    assert!(matches!(
        block_on(s.try_acquire("../x", Duration::from_secs(5))),
        Err(Error::InvalidKey { .. })
    ));
    // Lock names and keys are separate namespaces.
    block_on(cert_core::Storage::store(&s, "n", b"value")).unwrap();
    block_on(s.release(&lease)).unwrap();
    assert_eq!(
        block_on(cert_core::Storage::list(&s, "", true)).unwrap(),
        ["n"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_increment_write_under_the_lock_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let options = LockOptions::default()
        .with_ttl(Duration::from_secs(5))
        .with_backoff(Duration::from_micros(500), Duration::from_millis(5));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = Arc::new(FileStorage::new(&root).with_durable_writes(false));
        let options = options.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let guard = lock(s.clone() as Arc<dyn Locker>, "counter", &options)
                    .await
                    .unwrap();
                let n: u64 = match cert_core::Storage::load(&*s, "counter").await {
                    Ok(v) => String::from_utf8(v).unwrap().parse().unwrap(),
                    Err(Error::NotFound { .. }) => 0,
                    Err(err) => panic!("{err}"),
                };
                cert_core::Storage::store(&*s, "counter", (n + 1).to_string().as_bytes())
                    .await
                    .unwrap();
                guard.release().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let s = FileStorage::new(&root);
    let v = cert_core::Storage::load(&s, "counter").await.unwrap();
    assert_eq!(v, b"200");
}
