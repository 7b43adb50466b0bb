//! The whole suite on [`MemoryStorage`], the reference implementation.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use cert_conformance::{Capabilities, conformance_tests};
use cert_core::MemoryStorage;

/// Every namespace's data, so opening a namespace again reaches the same data.
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
