//! The engine's recording points, one function per event, so the call sites stay one
//! line each.

use std::time::{Duration, SystemTime};

use metrics::{counter, gauge, histogram};

use super::names;

pub(crate) fn certificate_stored(issuer: &str, renewed: bool) {
    let name = if renewed {
        names::CERTIFICATES_RENEWED
    } else {
        names::CERTIFICATES_OBTAINED
    };
    counter!(name, "issuer" => issuer.to_owned()).increment(1);
}

pub(crate) fn certificate_failed(issuer: &str, reason: &'static str) {
    counter!(names::CERTIFICATES_FAILED, "issuer" => issuer.to_owned(), "reason" => reason)
        .increment(1);
}

pub(crate) fn on_demand(decision: &'static str) {
    counter!(names::ON_DEMAND_DECISIONS, "decision" => decision).increment(1);
}

pub(crate) fn managed_names(count: usize) {
    gauge!(names::MANAGED_NAMES).set(count as f64);
}

/// Sets both expiry gauges from the earliest expiry, when any certificate is served.
pub(crate) fn earliest_expiry(earliest: Option<SystemTime>) {
    let Some(at) = earliest else { return };
    let now = SystemTime::now();
    let left = match at.duration_since(now) {
        Ok(left) => left.as_secs_f64(),
        Err(past) => -past.duration().as_secs_f64(),
    };
    let unix = match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => since.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    };
    gauge!(names::EARLIEST_EXPIRY).set(left);
    gauge!(names::EARLIEST_EXPIRY_TIMESTAMP).set(unix);
}

pub(crate) fn acme_order(valid: bool) {
    let outcome = if valid { "valid" } else { "failed" };
    counter!(names::ACME_ORDERS, "outcome" => outcome).increment(1);
}

pub(crate) fn acme_challenge(ty: &'static str, valid: bool) {
    let outcome = if valid { "valid" } else { "failed" };
    counter!(names::ACME_CHALLENGES, "type" => ty, "outcome" => outcome).increment(1);
}

pub(crate) fn acme_request(status: Option<u16>, took: Duration) {
    let class = match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(_) => "5xx",
        None => "error",
    };
    histogram!(names::ACME_REQUEST_DURATION, "status" => class).record(took.as_secs_f64());
}

pub(crate) fn cache_entries(delta: f64) {
    gauge!(names::CACHE_ENTRIES).increment(delta);
}

pub(crate) fn cache_lookup(hit: bool) {
    if hit {
        counter!(names::CACHE_HITS).increment(1);
    } else {
        counter!(names::CACHE_MISSES).increment(1);
    }
}

pub(crate) fn cache_eviction() {
    counter!(names::CACHE_EVICTIONS).increment(1);
    cache_entries(-1.0);
}

pub(crate) fn single_flight_wait() {
    counter!(names::CACHE_SINGLE_FLIGHT_WAITS).increment(1);
}
