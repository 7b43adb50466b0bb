//! The HTTP source's guards: plain `http://` only to this machine or by explicit opt-in
//! (with a warning), and a bound on warm-copy writes in flight when storage is slow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cert_core::testing::FaultyStorage;
use cert_core::{MemoryStorage, Storage};
use cert_source::{HttpSource, HttpSourceConfig, SourceError, SourceEvent};
use common::{Backend, Reply, TestCa, drain};

/// Counts the warnings logged while it is the current subscriber.
struct WarnCounter(Arc<AtomicUsize>);

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Builds a source from `config` and counts the warnings logged meanwhile.
fn build(config: HttpSourceConfig) -> (Result<HttpSource, SourceError>, usize) {
    let warnings = Arc::new(AtomicUsize::new(0));
    let result = tracing::subscriber::with_default(WarnCounter(Arc::clone(&warnings)), || {
        HttpSource::new(config)
    });
    (result, warnings.load(Ordering::SeqCst))
}

#[test]
fn plain_http_to_another_machine_needs_an_opt_in_and_warns() {
    let (refused, _) = build(HttpSourceConfig::new("http://certs.internal.example/get"));
    let err = refused.unwrap_err();
    assert!(matches!(err, SourceError::Config(_)), "{err}");
    assert!(err.to_string().contains("allow_plain_http"), "{err}");

    let (allowed, warnings) =
        build(HttpSourceConfig::new("http://certs.internal.example/get").allow_plain_http());
    allowed.unwrap();
    assert_eq!(warnings, 1, "the opt-in is logged as a warning");

    // Loopback never leaves the machine: accepted without opt-in, and without warning.
    for url in [
        "http://127.0.0.1:8080/get",
        "http://localhost/get",
        "http://[::1]:8080/get",
    ] {
        let (local, warnings) = build(HttpSourceConfig::new(url));
        local.unwrap();
        assert_eq!(warnings, 0, "{url}");
    }
    // https needs nothing.
    let (tls, warnings) = build(HttpSourceConfig::new("https://certs.internal.example/get"));
    tls.unwrap();
    assert_eq!(warnings, 0);
}

#[tokio::test]
async fn warm_copy_writes_are_bounded() {
    let ca = Arc::new(TestCa::new());
    let signer = Arc::clone(&ca);
    let backend = Backend::start(move |seen| {
        let name = seen.server_name.clone().unwrap_or_default();
        Reply::ok(signer.bundle(&[name.as_str()]))
    })
    .await;
    let storage = FaultyStorage::new(MemoryStorage::new());
    storage.stall_writes(Duration::from_millis(800));
    let src = HttpSource::new(
        HttpSourceConfig::new(backend.url())
            .with_storage(Arc::new(storage.clone()) as Arc<dyn Storage>)
            .with_max_pending_writes(2),
    )
    .unwrap();
    let mut events = src.subscribe();

    let started = tokio::time::Instant::now();
    let names: Vec<String> = (0..10).map(|i| format!("n{i}.example")).collect();
    let fetched = futures::future::join_all(names.iter().map(|n| src.get(n))).await;
    assert!(fetched.iter().all(|r| matches!(r, Ok(Some(_)))));
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "handshakes do not wait for storage"
    );

    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(storage.writes(), 2, "only two writes were in flight");
    let persisted = drain(&mut events)
        .into_iter()
        .filter(|e| matches!(e, SourceEvent::Persisted { .. }))
        .count();
    assert_eq!(persisted, 2);

    // Once the writes are done, new names are written again.
    storage.heal();
    src.get("late.example").await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(storage.writes(), 3);
}
