//! What the tests against a running server share: its URL and fresh namespaces.
#![allow(dead_code)]

use std::time::SystemTime;

/// The server named by `CERTSTORE_TEST_REDIS_URL`; `None` (said loudly) when it is not
/// set, a failure instead under `CERTSTORE_REQUIRE_SERVICES=1`.
pub fn url() -> Option<String> {
    match std::env::var("CERTSTORE_TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let required = std::env::var("CERTSTORE_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "CERTSTORE_TEST_REDIS_URL is not set and CERTSTORE_REQUIRE_SERVICES=1"
            );
            eprintln!("SKIPPED: CERTSTORE_TEST_REDIS_URL is not set");
            None
        }
    }
}

/// A namespace no other test or run uses: `prefix`, the process id and the time.
pub fn fresh_namespace(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// `url` with `query` (`name=value`) added after `?` or `&`.
pub fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}
