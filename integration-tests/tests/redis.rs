//! The conformance suite on Redis, against the server named by `CERTSTORE_TEST_REDIS_URL`
//! (skipped loudly when it is not set).
#![allow(clippy::unwrap_used)]

use cert_conformance::{Capabilities, conformance_tests};
use cert_redis::RedisStorage;

fn redis_url() -> String {
    integration_tests::service_url("CERTSTORE_TEST_REDIS_URL").unwrap_or_default()
}

conformance_tests! {
    open: |ns: String| async move {
        RedisStorage::connect(&redis_url(), &ns).await.unwrap()
    },
    capabilities: Capabilities::default().with_list_keys(100_000),
    enabled: || integration_tests::service_url("CERTSTORE_TEST_REDIS_URL").is_some(),
}
