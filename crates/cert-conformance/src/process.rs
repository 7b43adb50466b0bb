//! The cross-process lock case: the test binary re-runs itself as child OS processes.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cert_core::{LockOptions, Locker, lock};

use crate::Fixture;
use crate::runner::{CHILD_ENV, child_namespace};
use crate::support::ok;

const COUNTER: &str = "cross-process/counter";
const LOCK: &str = "cross-process/lock";
/// Written by the parent before the children start: a child that cannot see it does not
/// share the parent's data.
const PARENT: &str = "cross-process/parent";
const DONE: &str = "cert-conformance child done:";
/// What a child prints when it cannot see the parent's data.
const NOT_SHARED: &str = "cert-conformance child sees no data of its parent";

/// Why the case fails for a store that is not shared between processes, and the fix.
fn not_shared(namespace: &str, what: &str) -> String {
    format!(
        "cross_process_lock: {what}: the backend is not shared between OS processes \
         (a store opened for namespace {namespace:?} in a child process does not see the \
         data this process stored there: the data lives in one process's memory, or `open` \
         gives each process a store of its own). For such a backend, turn this case off \
         with `Capabilities::without_cross_process()`; otherwise make `open` reach the same \
         data from every process"
    )
}

/// `processes` child OS processes (the test binary, re-run with this one test selected)
/// each do `cycles` read-increment-write cycles of a counter under [`lock`]: every child
/// exits successfully and the final count is exactly `processes * cycles`.
///
/// Skipped when [`Capabilities::cross_process`](crate::Capabilities::cross_process) is
/// false. In a child (the [`CHILD_ENV`] variable names the namespace) it runs the cycles.
///
/// A backend whose instances do not share data across processes (an in-memory store)
/// fails with a message naming the fix,
/// [`Capabilities::without_cross_process`](crate::Capabilities::without_cross_process):
/// the parent stores a value before starting the children, and each child first checks
/// that it sees it.
///
/// # Panics
///
/// Besides failures of the store: when the fixture has no
/// [`test_name`](Fixture::with_test_name) to re-run.
pub async fn cross_process_lock(fixture: &Fixture) {
    if child_namespace().is_some_and(|ns| ns == fixture.namespace()) {
        return child(fixture).await;
    }
    let caps = fixture.capabilities();
    if !caps.cross_process {
        eprintln!("SKIPPED cross_process_lock: the backend is not shared across processes");
        return;
    }
    let Some(test_name) = fixture.test_name() else {
        panic!(
            "cross_process_lock re-runs the current test in child processes and needs its \
             name: build the fixture with Fixture::with_test_name"
        );
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => panic!("cannot find the test binary to re-run: {err}"),
    };
    let store = fixture.store().await;
    assert!(
        !ok(store.exists(COUNTER).await, "exists counter"),
        "the counter exists before the children start"
    );
    ok(
        store.store(PARENT, b"parent").await,
        "store the parent's value",
    );
    // Each cycle is a handful of round trips: on a slow or busy server the budget follows
    // the lock latency measured for the backend.
    let per_cycle = Duration::from_millis(100).max(caps.lock_latency * 10);
    let limit = Duration::from_secs(60) + per_cycle * (caps.processes * caps.cycles) as u32;
    let started = Instant::now();
    let mut children = Vec::new();
    for _ in 0..caps.processes {
        let mut command = tokio::process::Command::new(&exe);
        command
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("child:{}", fixture.namespace()))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        children.push(tokio::spawn(async move { command.output().await }));
    }
    let mut outputs = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let left = limit.saturating_sub(started.elapsed());
        let output = match tokio::time::timeout(left, child).await {
            Ok(Ok(Ok(output))) => output,
            Ok(Ok(Err(err))) => panic!("cannot run child process {i} ({exe:?}): {err}"),
            Ok(Err(err)) => panic!("the task waiting for child {i} failed: {err}"),
            Err(_) => panic!("child processes still running after {limit:?}"),
        };
        outputs.push(output);
    }
    let elapsed = started.elapsed();
    let want = format!("{DONE} {} cycles", caps.cycles);
    for (i, output) in outputs.iter().enumerate() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stdout.contains(NOT_SHARED) {
            panic!(
                "{}",
                not_shared(
                    fixture.namespace(),
                    &format!("child {i} does not see the value this process stored")
                )
            );
        }
        assert!(
            output.status.success(),
            "child {i} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            output.status
        );
        assert!(
            stdout.contains(&want),
            "child {i} did not run the test {test_name:?} (with `{exe:?} {test_name} --exact`):\
             \n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
    }
    let count = match store.load(COUNTER).await {
        Ok(bytes) => read_counter(&bytes),
        Err(err) if err.is_not_found() => panic!(
            "{}",
            not_shared(
                fixture.namespace(),
                "the children succeeded but their counter is not found here"
            )
        ),
        Err(err) => panic!("load counter: unexpected error {err:?} ({err})"),
    };
    eprintln!(
        "cross_process_lock: {} processes x {} cycles in {elapsed:?}, count {count}",
        caps.processes, caps.cycles
    );
    assert_eq!(
        count,
        (caps.processes * caps.cycles) as u64,
        "updates were lost: two processes held the lock at the same time"
    );
}

fn read_counter(bytes: &[u8]) -> u64 {
    match std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()) {
        Some(count) => count,
        None => panic!("the counter holds {bytes:?}, not a number"),
    }
}

/// What one child process does.
async fn child(fixture: &Fixture) {
    let caps = fixture.capabilities();
    let store = fixture.store().await;
    if !ok(store.exists(PARENT).await, "exists the parent's value") {
        println!("{NOT_SHARED}");
        panic!(
            "{}",
            not_shared(
                fixture.namespace(),
                "this child does not see the value its parent stored"
            )
        );
    }
    let locker: Arc<dyn Locker> = Arc::clone(&store) as Arc<dyn Locker>;
    // Exclusion is what is tested here, not expiry (every cycle releases): a long lease
    // keeps an emulator that stalls for seconds on a busy machine from ending it early.
    let opts = LockOptions::default()
        .with_ttl(caps.ttl(Duration::from_secs(30)))
        .with_backoff(Duration::from_millis(1), Duration::from_millis(20));
    for cycle in 0..caps.cycles {
        let guard = ok(
            lock(Arc::clone(&locker), LOCK, &opts).await,
            format_args!("lock, cycle {cycle}"),
        );
        let count = match store.load(COUNTER).await {
            Ok(bytes) => read_counter(&bytes),
            Err(err) if err.is_not_found() => 0,
            Err(err) => panic!("load counter, cycle {cycle}: {err:?}"),
        };
        ok(
            store
                .store(COUNTER, (count + 1).to_string().as_bytes())
                .await,
            format_args!("store counter, cycle {cycle}"),
        );
        assert!(!guard.is_lost(), "the lock was lost during cycle {cycle}");
        ok(
            guard.release().await,
            format_args!("release, cycle {cycle}"),
        );
    }
    println!("{DONE} {} cycles", caps.cycles);
}
