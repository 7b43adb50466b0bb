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
    /// The resolution of the modification times `stat` reports: an overwrite this long
    /// after the previous write must show a later time. Default 10 ms; 1 s for backends
    /// whose times come from HTTP dates (S3, Azure).
    pub timestamp_resolution: Duration,
    /// A slow round trip of the backend's lock operations (for example the p99 of a few
    /// measured with [`measure_lock_latency`](crate::measure_lock_latency) when the test
    /// starts). Every lock time to live the suite asks for is at least
    /// [`LATENCY_FACTOR`](Capabilities::LATENCY_FACTOR) times this, so a busy machine
    /// slows the cases down instead of letting leases run out while their refresh is
    /// queued. Default 0 (fixed times to live).
    pub lock_latency: Duration,
    /// Whether [`store_fenced`](cert_core::Storage::store_fenced) and
    /// [`delete_fenced`](cert_core::Storage::delete_fenced) check the lock on the server,
    /// in the same atomic step as the write. When `true` (the default) the suite also
    /// expects a write from a taken-over lease to be refused when the caller's local
    /// deadline still looks fresh; turn it off for backends that keep the default
    /// (a local deadline check right before the write).
    pub fenced_writes: bool,
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
            timestamp_resolution: Duration::from_millis(10),
            lock_latency: Duration::ZERO,
            fenced_writes: true,
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

    /// Fenced writes only check the lease's local deadline: skip the checks that only a
    /// server-side fence passes.
    pub fn without_fenced_writes(mut self) -> Self {
        self.fenced_writes = false;
        self
    }

    /// Whether fenced writes check the lock on the server (see
    /// [`fenced_writes`](Capabilities::fenced_writes)).
    pub fn with_fenced_writes(mut self, fenced_writes: bool) -> Self {
        self.fenced_writes = fenced_writes;
        self
    }

    /// Modification times have this resolution (see
    /// [`timestamp_resolution`](Capabilities::timestamp_resolution)).
    pub fn with_timestamp_resolution(mut self, resolution: Duration) -> Self {
        self.timestamp_resolution = resolution;
        self
    }

    /// How many slow round trips a lease must outlast: a refresh is sent a third into the
    /// lease and may need a retry or two before it lands, each as slow as the slowest.
    pub const LATENCY_FACTOR: u32 = 20;

    /// Lock round trips take up to `latency` (see
    /// [`lock_latency`](Capabilities::lock_latency)).
    pub fn with_lock_latency(mut self, latency: Duration) -> Self {
        self.lock_latency = latency;
        self
    }

    /// `ttl`, raised to the backend's [`min_lock_ttl`](Capabilities::min_lock_ttl) and to
    /// [`LATENCY_FACTOR`](Capabilities::LATENCY_FACTOR) times its
    /// [`lock_latency`](Capabilities::lock_latency).
    pub(crate) fn ttl(&self, ttl: Duration) -> Duration {
        ttl.max(self.min_lock_ttl)
            .max(self.lock_latency * Self::LATENCY_FACTOR)
    }

    /// How long after taking a lease of `ttl` the backend must let another caller take it
    /// over: the time to live plus the backend's expiry slack.
    pub(crate) fn expiry(&self, ttl: Duration) -> Duration {
        ttl + self.lock_expiry_slack
    }
}
