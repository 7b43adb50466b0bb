//! The whole conformance suite on [`MemoryStorage`], the reference implementation of the
//! contracts. Memory cannot be shared between processes, so the cross-process case is
//! skipped; a static registry gives "the same namespace opened again" its meaning.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use cert_conformance::{Capabilities, Fixture, conformance_tests, opener, run_case};
use cert_core::MemoryStorage;

/// Every namespace's data: opening a namespace again gives a clone over the same data.
static STORES: LazyLock<Mutex<HashMap<String, MemoryStorage>>> = LazyLock::new(Default::default);

fn open_memory(ns: &str) -> MemoryStorage {
    STORES
        .lock()
        .unwrap()
        .entry(ns.to_owned())
        .or_default()
        .clone()
}

conformance_tests! {
    open: |ns: String| async move { open_memory(&ns) },
    capabilities: Capabilities::default().without_cross_process(),
}

/// The cases are plain functions too: some called directly, one by name, on one fixture.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cases_run_without_the_macro() {
    let open = opener(|ns: String| async move { open_memory(&ns) });
    let fixture = Fixture::new(open, Capabilities::default().without_cross_process());
    cert_conformance::round_trip(&fixture).await;
    cert_conformance::try_lock_while_held(&fixture).await;
    fixture.cleanup().await;
    assert!(run_case("list_root", &fixture).await);
    assert!(!run_case("no_such_case", &fixture).await);
    fixture.cleanup().await;
    assert!(open_memory(fixture.namespace()).is_empty());
}
