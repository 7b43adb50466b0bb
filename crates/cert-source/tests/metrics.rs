//! The HTTP source's metrics: fetches by outcome, handshake lookups (hit, stale, miss)
//! and negative entries, as a recorder installed for the process sees them.
//!
//! One test in this process: the recorder is process-wide.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cert_source::{HttpSource, HttpSourceConfig};
use common::{Backend, Reply, TestCa};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshot};

/// What a snapshot holds: each counter's increase since the previous snapshot.
type Counts = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// The increase of the counter `name` with every label of `labels` in `counts`.
fn counter(counts: &Counts, name: &str, labels: &[(&str, &str)]) -> u64 {
    counts
        .iter()
        .filter(|(key, ..)| key.key().name() == name)
        .filter(|(key, ..)| {
            labels.iter().all(|(k, v)| {
                key.key()
                    .labels()
                    .any(|label| label.key() == *k && label.value() == *v)
            })
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_lookups_and_negative_entries_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let fetches = cert_core::metrics::names::SOURCE_FETCHES;
    let lookups = cert_core::metrics::names::SOURCE_LOOKUPS;
    let negative = cert_core::metrics::names::SOURCE_NEGATIVE_ENTRIES;

    let ca = Arc::new(TestCa::new());
    let bundle = ca.bundle(&["a.example"]);
    let backend = Backend::start(move |seen| {
        if seen.target.contains("none.example") {
            Reply::status(204)
        } else {
            Reply::ok(bundle.clone()).header("Cache-Control", "max-age=1")
        }
    })
    .await;
    let source = HttpSource::new(
        HttpSourceConfig::new(backend.url())
            .with_stale_if_error(Duration::from_secs(30))
            .with_stale_retry(Duration::from_millis(100)),
    )
    .unwrap();

    source.get("a.example").await.unwrap().unwrap();
    assert!(source.lookup("a.example").is_some());
    assert!(source.lookup("b.example").is_none());
    assert!(source.get("none.example").await.unwrap().is_none());
    let counts = Snapshot::into_vec(snapshotter.snapshot());
    assert_eq!(counter(&counts, fetches, &[("outcome", "fetched")]), 1);
    assert_eq!(counter(&counts, fetches, &[("outcome", "not_found")]), 1);
    assert_eq!(counter(&counts, negative, &[]), 1);
    assert_eq!(counter(&counts, lookups, &[("result", "hit")]), 1);
    assert_eq!(counter(&counts, lookups, &[("result", "miss")]), 1);

    // The backend fails once the entry has expired: the old certificate is served stale.
    backend.set_handler(|_| Reply::status(503));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    source
        .get("a.example")
        .await
        .unwrap()
        .expect("served stale");
    assert!(source.lookup("a.example").is_some());
    let counts = Snapshot::into_vec(snapshotter.snapshot());
    assert_eq!(counter(&counts, fetches, &[("outcome", "failed")]), 1);
    assert_eq!(counter(&counts, lookups, &[("result", "stale")]), 1);
    assert_eq!(counter(&counts, lookups, &[("result", "hit")]), 0);
}
