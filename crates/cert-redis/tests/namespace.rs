//! The namespace of a URL (`?namespace=`) against the server named by
//! `CERTSTORE_TEST_REDIS_URL` (skipped loudly when it is not set, failing under
//! `CERTSTORE_REQUIRE_SERVICES=1`): it applies when no other is given, agrees with the
//! same one given, and a different one is refused before anything is written.
#![allow(clippy::unwrap_used)]

mod common;

use common::{fresh_namespace, url, with_query};

use cert_core::Storage;
use cert_redis::{DEFAULT_NAMESPACE, RedisConfig, RedisStorage};

#[tokio::test]
async fn the_url_namespace_is_used_and_agrees_with_the_argument() {
    let Some(url) = url() else { return };
    let ns = fresh_namespace("url_ns");
    let in_url = with_query(&url, &format!("namespace={ns}"));

    // No namespace given (the default): the URL's applies.
    let from_url = RedisStorage::connect(&in_url, DEFAULT_NAMESPACE)
        .await
        .unwrap();
    assert_eq!(from_url.namespace(), ns);
    from_url
        .store("k/v", b"in the url namespace")
        .await
        .unwrap();
    let from_config = RedisConfig::new(in_url.as_str()).connect().await.unwrap();
    assert_eq!(from_config.namespace(), ns);

    // The same namespace named in both places reaches the same data...
    let both = RedisStorage::connect(&in_url, &ns).await.unwrap();
    assert_eq!(both.load("k/v").await.unwrap(), b"in the url namespace");
    let plain = RedisStorage::connect(&url, &ns).await.unwrap();
    assert_eq!(plain.load("k/v").await.unwrap(), b"in the url namespace");
    // ... which the default namespace does not see.
    let default = RedisStorage::connect(&url, DEFAULT_NAMESPACE)
        .await
        .unwrap();
    assert_eq!(default.namespace(), DEFAULT_NAMESPACE);
    assert!(default.load("k/v").await.unwrap_err().is_not_found());

    // Two different namespaces: refused, naming both.
    let other = fresh_namespace("other_ns");
    let err = RedisStorage::connect(&in_url, &other)
        .await
        .expect_err("two different namespaces are refused")
        .to_string();
    assert!(err.contains(&ns) && err.contains(&other), "{err}");
    let nothing = RedisStorage::connect(&url, &other).await.unwrap();
    assert!(nothing.list("", true).await.unwrap().is_empty());

    from_url.delete("k").await.unwrap();
    assert!(plain.list("", true).await.unwrap().is_empty());
}
