//! Numbers an operator can graph and alert on, recorded through the
//! [`metrics`](https://docs.rs/metrics) facade.
//!
//! Nothing is exported by this crate: a program installs the recorder it wants
//! (`metrics-exporter-prometheus`, a StatsD or OpenTelemetry bridge, ...) and every
//! number below flows to it; without one, recording costs an atomic load. `certstore
//! serve --metrics ADDR` installs the Prometheus exporter. Call [`describe`] once after
//! installing a recorder to give each metric its help text and unit.
//!
//! Labels have few values (issuers, backends, operations, outcomes): no label carries a
//! server name, so a fleet with a million names has the same number of series as one with
//! ten. The table of names, labels and meanings is in the repository's
//! `docs/metrics.md`.
//!
//! Storage numbers come from [`Metered`], a wrapper around any storage; the engine, the
//! cache, the resolver, the lock helpers and the ACME issuer record the rest themselves.

use std::time::Duration;

use ::metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram};

#[cfg(feature = "engine")]
mod engine;
mod metered;

#[cfg(feature = "engine")]
pub(crate) use engine::*;
pub use metered::{Metered, MeteredLayer};

/// The metric names, one constant each.
pub mod names {
    /// Counter, `issuer`: first certificates obtained and stored.
    pub const CERTIFICATES_OBTAINED: &str = "certstore_certificates_obtained_total";
    /// Counter, `issuer`: replacement certificates obtained and stored.
    pub const CERTIFICATES_RENEWED: &str = "certstore_certificates_renewed_total";
    /// Counter, `issuer` and `reason`: failed attempts to obtain or renew.
    pub const CERTIFICATES_FAILED: &str = "certstore_certificates_failed_total";
    /// Gauge: seconds until the earliest expiry among the certificates this node serves
    /// (negative once expired), refreshed by every renewal pass and `manage`.
    pub const EARLIEST_EXPIRY: &str = "certstore_certificates_earliest_expiry_seconds";
    /// Gauge: the earliest expiry as seconds since the Unix epoch (exact between passes:
    /// `... - time()` in PromQL).
    pub const EARLIEST_EXPIRY_TIMESTAMP: &str =
        "certstore_certificates_earliest_expiry_timestamp_seconds";
    /// Gauge: names under management on this node.
    pub const MANAGED_NAMES: &str = "certstore_managed_names";
    /// Counter, `decision`: on-demand TLS decisions (`allowed`, `denied`, `busy`,
    /// `rate_limited`).
    pub const ON_DEMAND_DECISIONS: &str = "certstore_on_demand_decisions_total";
    /// Counter, `outcome`: ACME orders driven to their end (`valid`, `failed`).
    pub const ACME_ORDERS: &str = "certstore_acme_orders_total";
    /// Counter, `type` and `outcome`: ACME challenges answered (`valid`, `failed`).
    pub const ACME_CHALLENGES: &str = "certstore_acme_challenges_total";
    /// Histogram, `status` (`2xx`, `3xx`, `4xx`, `5xx`, `error`): seconds the CA took to
    /// answer a request.
    pub const ACME_REQUEST_DURATION: &str = "certstore_acme_request_duration_seconds";
    /// Gauge: certificates held by the handshake caches.
    pub const CACHE_ENTRIES: &str = "certstore_cache_entries";
    /// Counter: handshakes served a certificate.
    pub const CACHE_HITS: &str = "certstore_cache_hits_total";
    /// Counter: handshakes that found no certificate.
    pub const CACHE_MISSES: &str = "certstore_cache_misses_total";
    /// Counter: entries evicted to stay within capacity.
    pub const CACHE_EVICTIONS: &str = "certstore_cache_evictions_total";
    /// Counter: callers that waited for another caller's load of the same name.
    pub const CACHE_SINGLE_FLIGHT_WAITS: &str = "certstore_cache_single_flight_waits_total";
    /// Histogram, `backend` and `operation`: seconds each storage or lock operation took.
    pub const STORAGE_DURATION: &str = "certstore_storage_operation_duration_seconds";
    /// Counter, `backend`, `operation` and `kind`: failed storage or lock operations (a
    /// missing key is an answer, not an error).
    pub const STORAGE_ERRORS: &str = "certstore_storage_errors_total";
    /// Histogram: seconds waited before a lock was taken.
    pub const LOCK_WAIT: &str = "certstore_lock_wait_seconds";
    /// Histogram: seconds a lock was held, from taking it to its release or loss.
    pub const LOCK_HOLD: &str = "certstore_lock_hold_seconds";
    /// Counter: leases lost while held (refresh refused, or unanswered until the deadline).
    pub const LOCK_LEASES_LOST: &str = "certstore_lock_leases_lost_total";
    /// Counter, `backend`: fenced writes refused because their lease was no longer held.
    pub const LOCK_FENCED_REFUSED: &str = "certstore_lock_fenced_writes_refused_total";
    /// Counter, `outcome` (`fetched`, `warm`, `not_found`, `failed`): certificate fetches
    /// of `cert-source`'s HTTP source (`warm`: the copy in storage was fresh).
    pub const SOURCE_FETCHES: &str = "certstore_source_fetches_total";
    /// Counter, `result` (`hit`, `stale`, `miss`): handshake lookups of the HTTP source
    /// (`stale`: an expired certificate served while the backend fails).
    pub const SOURCE_LOOKUPS: &str = "certstore_source_lookups_total";
    /// Counter: negative entries the HTTP source recorded (the backend had no
    /// certificate for a name).
    pub const SOURCE_NEGATIVE_ENTRIES: &str = "certstore_source_negative_entries_total";
}

/// Gives every metric of this crate its help text and unit in the installed recorder.
/// Call once, after installing the recorder; calling it again does no harm.
pub fn describe() {
    use names::*;
    let counters: &[(&'static str, &'static str)] = &[
        (
            CERTIFICATES_OBTAINED,
            "First certificates obtained and stored, by issuer.",
        ),
        (
            CERTIFICATES_RENEWED,
            "Replacement certificates obtained and stored, by issuer.",
        ),
        (
            CERTIFICATES_FAILED,
            "Failed attempts to obtain or renew a certificate, by issuer and reason.",
        ),
        (
            ON_DEMAND_DECISIONS,
            "On-demand TLS decisions: allowed, denied, busy, rate_limited.",
        ),
        (ACME_ORDERS, "ACME orders driven to their end, by outcome."),
        (
            ACME_CHALLENGES,
            "ACME challenges answered, by challenge type and outcome.",
        ),
        (CACHE_HITS, "TLS handshakes served a certificate."),
        (CACHE_MISSES, "TLS handshakes that found no certificate."),
        (
            CACHE_EVICTIONS,
            "Certificates evicted from the handshake cache to stay within capacity.",
        ),
        (
            CACHE_SINGLE_FLIGHT_WAITS,
            "Callers that waited for another caller's load of the same name.",
        ),
        (
            STORAGE_ERRORS,
            "Failed storage and lock operations, by backend, operation and error kind.",
        ),
        (
            LOCK_LEASES_LOST,
            "Lock leases lost while held (refresh refused or unanswered until the deadline).",
        ),
        (
            LOCK_FENCED_REFUSED,
            "Fenced writes refused because their lease was no longer held, by backend.",
        ),
        (
            SOURCE_FETCHES,
            "Certificate fetches of the HTTP source, by outcome.",
        ),
        (
            SOURCE_LOOKUPS,
            "Handshake lookups of the HTTP source: hit, stale, miss.",
        ),
        (
            SOURCE_NEGATIVE_ENTRIES,
            "Negative entries the HTTP source recorded.",
        ),
    ];
    for &(name, help) in counters {
        describe_counter!(name, Unit::Count, help);
    }
    describe_gauge!(
        EARLIEST_EXPIRY,
        Unit::Seconds,
        "Seconds until the earliest expiry among the certificates this node serves."
    );
    describe_gauge!(
        EARLIEST_EXPIRY_TIMESTAMP,
        Unit::Seconds,
        "The earliest expiry among the certificates this node serves, as a Unix time."
    );
    describe_gauge!(
        MANAGED_NAMES,
        Unit::Count,
        "Names under management on this node."
    );
    describe_gauge!(
        CACHE_ENTRIES,
        Unit::Count,
        "Certificates held by the handshake caches."
    );
    describe_histogram!(
        ACME_REQUEST_DURATION,
        Unit::Seconds,
        "Seconds the ACME server took to answer a request, by status class."
    );
    describe_histogram!(
        STORAGE_DURATION,
        Unit::Seconds,
        "Seconds each storage or lock operation took, by backend and operation."
    );
    describe_histogram!(
        LOCK_WAIT,
        Unit::Seconds,
        "Seconds waited before a lock was taken."
    );
    describe_histogram!(
        LOCK_HOLD,
        Unit::Seconds,
        "Seconds a lock was held, until its release or loss."
    );
}

/// Histogram bucket bounds, in seconds, fit for every duration above: 1 ms to 2 min.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The lock helpers' recording points (the engine's are in `engine.rs`), kept here so the
/// call sites stay one line each.
pub(crate) fn lock_taken(waited: Duration) {
    ::metrics::histogram!(names::LOCK_WAIT).record(waited.as_secs_f64());
}

pub(crate) fn lock_ended(held: Duration) {
    ::metrics::histogram!(names::LOCK_HOLD).record(held.as_secs_f64());
}

pub(crate) fn lease_lost() {
    counter!(names::LOCK_LEASES_LOST).increment(1);
}
