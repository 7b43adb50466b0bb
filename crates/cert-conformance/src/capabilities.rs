//! [`Capabilities`]: what a backend can do and how patient the suite must be with it.

use std::time::Duration;

/// What the backend under test supports, and the sizes and timings the suite uses with it.
///
/// Start from [`Capabilities::default`] (a backend shared across processes, with every
/// feature) and adjust with the builder methods:
///
/// ```
/// use std::time::Duration;
/// use cert_conformance::Capabilities;
///
/// let caps = Capabilities::default()
///     .without_cross_process()
///     .with_list_keys(2_000)
///     .with_lock_expiry_slack(Duration::from_millis(100));
/// assert!(!caps.cross_process);
/// assert_eq!(caps.list_keys, 2_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Whether two OS processes that call `open` with the same namespace share data and
    /// locks. When `true` (the default) the cross-process lock case runs; turn it off for
    /// stores that live in one process's memory.
    pub cross_process: bool,
    /// How many keys the listing case writes under one prefix and lists back. Default
    /// 10,000.
    pub list_keys: usize,
    /// Size in bytes of the large value the suite round-trips; `0` skips that case.
    /// Default 4 MiB.
    pub large_value: usize,
    /// The shortest lock time to live the backend accepts; lock cases never ask for less.
    /// Default 200 ms.
    pub min_lock_ttl: Duration,
    /// How long after a lease's time to live the backend may still refuse a takeover
    /// (coarse timestamps, clock tolerance). Default 0.
    pub lock_expiry_slack: Duration,
    /// How many child OS processes the cross-process lock case runs. Default 4.
    pub processes: usize,
    /// How many read-increment-write cycles each child process does. Default 100.
    pub cycles: usize,
    /// The longest one case may run before it fails as hung. Default 5 minutes.
    pub case_timeout: Duration,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            cross_process: true,
            list_keys: 10_000,
            large_value: 4 * 1024 * 1024,
            min_lock_ttl: Duration::from_millis(200),
            lock_expiry_slack: Duration::ZERO,
            processes: 4,
            cycles: 100,
            case_timeout: Duration::from_secs(300),
        }
    }
}

impl Capabilities {
    /// The backend cannot be shared between OS processes: skip the cross-process case.
    pub fn without_cross_process(mut self) -> Self {
        self.cross_process = false;
        self
    }

    /// Whether the backend can be shared between OS processes.
    pub fn with_cross_process(mut self, cross_process: bool) -> Self {
        self.cross_process = cross_process;
        self
    }

    /// List `keys` keys under one prefix in the listing case.
    pub fn with_list_keys(mut self, keys: usize) -> Self {
        self.list_keys = keys;
        self
    }

    /// Round-trip a value of `bytes` bytes in the large value case (`0` skips it).
    pub fn with_large_value(mut self, bytes: usize) -> Self {
        self.large_value = bytes;
        self
    }

    /// Never ask the backend for a lock time to live below `ttl`.
    pub fn with_min_lock_ttl(mut self, ttl: Duration) -> Self {
        self.min_lock_ttl = ttl;
        self
    }

    /// Allow `slack` after a lease's time to live before expecting a takeover to succeed.
    pub fn with_lock_expiry_slack(mut self, slack: Duration) -> Self {
        self.lock_expiry_slack = slack;
        self
    }

    /// Run `processes` child processes in the cross-process lock case.
    pub fn with_processes(mut self, processes: usize) -> Self {
        self.processes = processes;
        self
    }

    /// Have each child process do `cycles` read-increment-write cycles.
    pub fn with_cycles(mut self, cycles: usize) -> Self {
        self.cycles = cycles;
        self
    }

    /// Fail a case that runs longer than `timeout`.
    pub fn with_case_timeout(mut self, timeout: Duration) -> Self {
        self.case_timeout = timeout;
        self
    }

    /// `ttl`, raised to the backend's [`min_lock_ttl`](Capabilities::min_lock_ttl).
    pub(crate) fn ttl(&self, ttl: Duration) -> Duration {
        ttl.max(self.min_lock_ttl)
    }
}
