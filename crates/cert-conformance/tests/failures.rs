//! What the suite says when a backend fails it: the case, the contract rule it checks and
//! where the suite was run from; and for a store that is not shared between processes,
//! the cross-process case names the fix (`Capabilities::without_cross_process()`).
#![allow(clippy::unwrap_used)]

use std::any::Any;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{LazyLock, Mutex};

use cert_conformance::{CHILD_ENV, Capabilities, Fixture, Opener, opener, run_case};
use cert_core::MemoryStorage;
use futures::FutureExt;

/// The data of every namespace, in this process only (as an in-memory backend keeps it).
static STORES: LazyLock<Mutex<HashMap<String, MemoryStorage>>> = LazyLock::new(Default::default);

/// Opens a namespace of the in-process store: the same data for the same namespace.
fn in_process() -> Opener {
    opener(|ns: String| {
        let store = STORES.lock().unwrap().entry(ns).or_default().clone();
        async move { store }
    })
}

/// Opens a store that forgets: every call a new, empty one (instances share nothing).
fn forgetful() -> Opener {
    opener(|_ns: String| async move { MemoryStorage::new() })
}

fn no_cross_process() -> Capabilities {
    Capabilities::default().without_cross_process()
}

fn panic_text(panic: Box<dyn Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(text) => *text,
        Err(panic) => panic.downcast_ref::<&str>().unwrap().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_case_failures_name_the_case_the_rule_and_the_caller() {
    let fixture = Fixture::new(forgetful(), no_cross_process());
    let line = line!() + 1;
    let run = AssertUnwindSafe(run_case("instances_share_data", &fixture));
    let text = panic_text(run.catch_unwind().await.unwrap_err());
    assert!(text.contains("`instances_share_data` failed"), "{text}");
    assert!(
        text.contains("contract: two instances opened on the same namespace"),
        "{text}"
    );
    assert!(text.contains(&format!("{}:{line}:", file!())), "{text}");
    assert!(text.contains("failure: "), "{text}");
}

#[test]
fn run_test_failures_name_the_caller() {
    fn capabilities() -> Capabilities {
        no_cross_process()
    }
    let line = line!() + 2;
    let run = std::panic::catch_unwind(|| {
        cert_conformance::__private::run_test(
            module_path!(),
            "instances_share_data",
            forgetful,
            capabilities,
            || true,
        )
    });
    let text = panic_text(run.unwrap_err());
    assert!(text.contains("`instances_share_data` failed"), "{text}");
    assert!(text.contains(&format!("{}:{line}:", file!())), "{text}");
}

/// The cross-process case on a store that lives in this process: the child processes
/// (this test, run again with [`CHILD_ENV`] set) see nothing of the parent's data, and the
/// parent's failure names `without_cross_process()`.
#[test]
fn in_process_store_is_told_to_turn_the_cross_process_case_off() {
    const TEST: &str = "in_process_store_is_told_to_turn_the_cross_process_case_off";
    let capabilities = Capabilities::default().with_processes(2).with_cycles(3);
    let child = std::env::var(CHILD_ENV)
        .ok()
        .and_then(|value| value.strip_prefix("child:").map(str::to_owned));
    let fixture = match child.clone() {
        Some(namespace) => Fixture::with_namespace(in_process(), namespace, capabilities),
        None => Fixture::new(in_process(), capabilities),
    }
    .with_test_name(TEST);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(run_case("cross_process_lock", &fixture))
    }));
    if child.is_some() {
        // A child fails (it sees none of the parent's data); the parent reads why.
        assert!(run.is_err(), "a child of an in-process store cannot pass");
        std::panic::resume_unwind(run.unwrap_err());
    }
    let text = panic_text(run.unwrap_err());
    assert!(
        text.contains("Capabilities::without_cross_process()"),
        "{text}"
    );
    assert!(text.contains("not shared between OS processes"), "{text}");
    assert!(text.contains("`cross_process_lock` failed"), "{text}");
}
