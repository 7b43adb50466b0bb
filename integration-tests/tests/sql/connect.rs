//! Connecting: unsafe table names refused before any connection, and an unreachable
//! server reported unavailable quickly.

use std::time::{Duration, Instant};

use cert_core::Error;
use cert_sql::{SqlConfig, SqlStorage};

#[tokio::test]
async fn unsafe_table_names_are_refused_before_connecting() {
    for prefix in ["kv; DROP TABLE users", "1kv", "k\"v", &"p".repeat(60)] {
        let config = SqlConfig::default().with_table_prefix(prefix);
        // The port is closed: the refusal must come from the check, not the network.
        let result = SqlStorage::connect_with("postgres://u@127.0.0.1:1/db", config).await;
        match result {
            Err(Error::Backend { backend, source }) => {
                assert_eq!(backend, "postgres");
                assert!(source.to_string().contains("table name"), "{source}");
            }
            other => panic!("{prefix:?}: expected a configuration error, got {other:?}"),
        }
    }
    let refused = SqlStorage::connect("redis://127.0.0.1/").await;
    assert!(matches!(
        refused,
        Err(Error::Backend { backend: "sql", .. })
    ));
}

#[tokio::test]
async fn unreachable_server_is_unavailable_quickly() {
    let config = SqlConfig::default().with_acquire_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let result = SqlStorage::connect_with("postgres://postgres@127.0.0.1:1/test", config).await;
    match result {
        Err(
            err @ Error::Unavailable {
                backend: "postgres",
                ..
            },
        ) => assert!(err.is_retryable()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(15));
}
