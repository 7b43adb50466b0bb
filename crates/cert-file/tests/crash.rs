//! A writer killed with SIGKILL at random moments never leaves a torn value: the key
//! always loads as one complete value, old or new.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cert_core::Storage;
use cert_file::FileStorage;

const ROLE: &str = "CERTSTORE_FILE_TEST_ROLE";
const ROOT: &str = "CERTSTORE_FILE_TEST_ROOT";
const KEY: &str = "crash/value";

/// A value that checks itself: a header naming its sequence number and length, then a
/// body generated from the sequence number.
fn make_value(seq: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seq);
    let len = 256 * 1024 + rng.usize(..768 * 1024);
    let mut value = format!("seq {seq} len {len}\n").into_bytes();
    value.extend((0..len).map(|_| rng.u8(..)));
    value
}

fn check_value(value: &[u8]) -> u64 {
    let end = value.iter().position(|&b| b == b'\n').expect("header line");
    let header = std::str::from_utf8(&value[..end]).unwrap();
    let mut words = header.split(' ');
    assert_eq!(words.next(), Some("seq"), "{header}");
    let seq: u64 = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), Some("len"));
    let len: usize = words.next().unwrap().parse().unwrap();
    assert_eq!(
        value.len(),
        end + 1 + len,
        "value {seq} is truncated or too long"
    );
    assert!(
        value == make_value(seq),
        "value {seq} is mixed with another"
    );
    seq
}

/// The child: store fresh values to one key forever, announcing each on stdout.
fn writer(root: &str) -> ! {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let storage = FileStorage::new(root);
    let start = std::process::id() as u64 * 1_000_000;
    for seq in start.. {
        runtime
            .block_on(storage.store(KEY, &make_value(seq)))
            .unwrap();
        println!("stored {seq}");
    }
    unreachable!()
}

#[test]
fn sigkill_during_writes_never_tears_a_value() {
    if std::env::var(ROLE).as_deref() == Ok("writer") {
        writer(&std::env::var(ROOT).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let storage = FileStorage::new(&root);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(42);
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..8 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "sigkill_during_writes_never_tears_a_value",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, "writer")
            .env(ROOT, &root)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the child has stored at least once, then let it run a random while.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = lines.next().expect("child output").unwrap();
            if line.starts_with("stored ") {
                break;
            }
            assert!(Instant::now() < deadline, "child never stored");
        }
        std::thread::sleep(Duration::from_micros(rng.u64(..40_000)));
        child.kill().unwrap();
        child.wait().unwrap();

        let value = runtime.block_on(storage.load(KEY)).unwrap();
        seen.insert(check_value(&value));
        // Temporary files a killed writer left are never listed.
        assert_eq!(
            runtime.block_on(storage.list("", true)).unwrap(),
            [KEY],
            "round {round}"
        );
    }
    // Counted once at the end: a file left in one round is still there in the next.
    let leftovers = std::fs::read_dir(root.join("crash"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".certstore-tmp-")
        })
        .count();
    assert_eq!(
        seen.len(),
        8,
        "each round ends on a value of its own writer"
    );
    eprintln!("temporary files left by killed writers: {leftovers}");
    std::thread::sleep(Duration::from_millis(5));
    let removed = runtime
        .block_on(storage.clean_up(Duration::from_millis(1)))
        .unwrap();
    assert_eq!(removed, leftovers);
    let value = runtime.block_on(storage.load(KEY)).unwrap();
    check_value(&value);
}
