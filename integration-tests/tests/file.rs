//! The whole conformance suite on [`FileStorage`], including locks held across OS
//! processes (the cross-process case re-runs this test binary).

use std::path::PathBuf;
use std::time::Duration;

use cert_conformance::{Capabilities, conformance_tests};
use cert_file::FileStorage;

/// How far apart the clocks of the processes sharing a directory may be. Every process
/// here runs on one host, so a little is enough, and it keeps the expiry cases short.
const CLOCK_SKEW: Duration = Duration::from_millis(100);

/// The directory of a namespace, the same for every instance and every child process.
fn root(ns: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("conformance-file")
        .join(ns)
}

conformance_tests! {
    open: |ns: String| async move {
        FileStorage::new(root(&ns)).with_clock_skew_tolerance(CLOCK_SKEW)
    },
    capabilities: Capabilities::default()
        .with_lock_expiry_slack(CLOCK_SKEW + Duration::from_millis(50)),
}
