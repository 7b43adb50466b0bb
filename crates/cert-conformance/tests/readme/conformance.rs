use cert_conformance::{Capabilities, conformance_tests};

// `open` gets a fresh namespace per test; opening the same namespace again must reach the
// same data. The default capabilities expect a backend shared between processes (a
// server, a shared directory): the cross-process lock case re-runs the test binary and
// checks that its child processes see the same data and locks. A store that keeps its
// data in one process's memory turns that case off:
conformance_tests! {
    open: |ns: String| async move { MyStorage::open_namespace(&ns) },
    capabilities: Capabilities::default().without_cross_process(),
}
