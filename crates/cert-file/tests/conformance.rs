//! The shared conformance suite on [`FileStorage`], one fresh directory per namespace,
//! with the cross-process lock case on (4 processes x 100 cycles).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use cert_conformance::{Capabilities, conformance_tests};
use cert_file::FileStorage;

/// Processes on one host share a clock, so a small tolerance is safe here.
///
/// Writes skip fsync: the suite checks semantics, not power-loss durability (the crash
/// test covers torn writes with the default, durable settings), and 10,000 fsynced
/// stores would dominate its run time. The suite also passes with durable writes.
const TOLERANCE: Duration = Duration::from_millis(100);

fn base() -> PathBuf {
    std::env::temp_dir().join("certstore-conformance")
}

conformance_tests! {
    open: |ns: String| async move {
        FileStorage::new(base().join(ns))
            .with_clock_skew_tolerance(TOLERANCE)
            .with_durable_writes(false)
    },
    capabilities: Capabilities::default()
        .with_lock_expiry_slack(TOLERANCE)
        .with_processes(4)
        .with_cycles(100),
}
