//! Helpers shared by the integration tests: finding the real servers they run against.
//!
//! Servers are found through environment variables that
//! `integration-tests/services/start.sh` writes (and `integration-tests/services/test.sh`
//! exports before running the tests). When a variable is missing and a Docker engine
//! answers (feature `docker`: `cargo nextest run -p integration-tests --features docker`), the server is started as a container with
//! `testcontainers` and shared by every test process. Otherwise the test is skipped with a
//! loud message, except under `CERTSTORE_REQUIRE_SERVICES=1` (set by CI), where a missing
//! server fails the test.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "docker")]
mod docker;
pub mod probe;

/// Set to `1` to turn a missing server into a test failure instead of a skip.
pub const REQUIRE_SERVICES: &str = "CERTSTORE_REQUIRE_SERVICES";

/// Whether missing servers must fail tests.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The URL of the server named by `var` (for example `CERTSTORE_TEST_REDIS_URL`).
///
/// When it is not set, a Docker container (see the crate docs); failing that, `None`
/// (after printing why) unless servers are required.
///
/// # Panics
///
/// When the variable is not set and [`services_required`] is true: in CI a missing server
/// is a failure, never a silent skip.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            #[cfg(feature = "docker")]
            match docker::url_for(var) {
                Ok(Some(url)) => return Some(url),
                Ok(None) => {}
                Err(err) => {
                    assert!(!services_required(), "{var}: {err}");
                    eprintln!("SKIPPED: {var}: {err}");
                    return None;
                }
            }
            let hint = "start the servers with `bash integration-tests/services/start.sh` \
                        and export the variables it prints, or run \
                        `bash integration-tests/services/test.sh`";
            assert!(
                !services_required(),
                "{var} is not set and {REQUIRE_SERVICES}=1: {hint}"
            );
            eprintln!("SKIPPED: {var} is not set; {hint}");
            None
        }
    }
}

/// A fresh name for isolating one test's data on a shared server: `prefix` plus random
/// hex, made of `[a-z0-9_]` so it is valid as a key segment, a Redis key part and a SQL
/// identifier.
pub fn unique_name(prefix: &str) -> String {
    let token = cert_core::LockToken::generate();
    format!("{prefix}_{}", &token.as_str()[..16])
}
