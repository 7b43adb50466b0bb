//! The shared conformance suite, run through `Encrypted<MemoryStorage>`.
//!
//! `open(ns)` with the same `ns` must give a second instance over the same data, so the
//! memory storages live in a process-wide map keyed by namespace (the cross-process test
//! is off: memory is not shared between processes).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use cert_conformance::{Capabilities, conformance_tests};
use cert_core::MemoryStorage;
use cert_encrypted::{Encrypted, KeyRing, SecretKey};

fn memory(ns: &str) -> MemoryStorage {
    static STORES: OnceLock<Mutex<HashMap<String, MemoryStorage>>> = OnceLock::new();
    STORES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap()
        .entry(ns.to_owned())
        .or_default()
        .clone()
}

fn ring() -> KeyRing {
    KeyRing::new(SecretKey::from_bytes([42; 32]))
}

conformance_tests! {
    open: |ns: String| async move { Encrypted::new(memory(&ns), ring()) },
    capabilities: Capabilities::default().without_cross_process(),
}

/// The same suite through `Encrypted<FileStorage>`, cross-process locks included: the
/// child processes reopen the same directory from the namespace.
mod file {
    use std::time::Duration;

    use cert_conformance::{Capabilities, conformance_tests};
    use cert_encrypted::Encrypted;
    use cert_file::FileStorage;

    fn root(ns: &str) -> std::path::PathBuf {
        std::env::temp_dir()
            .join("cert-encrypted-conformance")
            .join(ns)
    }

    conformance_tests! {
        open: |ns: String| async move {
            let file = FileStorage::new(root(&ns))
                .with_durable_writes(false)
                .with_clock_skew_tolerance(Duration::ZERO);
            Encrypted::new(file, super::ring())
        },
        capabilities: Capabilities::default(),
    }
}
