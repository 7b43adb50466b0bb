//! What the source keeps and for how long: lifetimes from `Cache-Control` or the
//! configured TTLs, expiry, a fetch finished after its caller gave up, stale-if-error, the
//! memory bound, and a warm restart from encrypted files.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cert_core::Storage;
use cert_source::{HttpSourceConfig, SourceError, SourceEvent};

use crate::common::{Backend, Reply, TestCa, drain};
use crate::source;

/// How far `time` is from `now + secs`, in seconds.
fn off_by(time: SystemTime, secs: u64) -> f64 {
    let expected = SystemTime::now() + Duration::from_secs(secs);
    match time.duration_since(expected) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => e.duration().as_secs_f64(),
    }
}

#[tokio::test]
async fn lifetime_from_s_maxage_then_max_age_then_default_or_fixed() {
    let ca = Arc::new(TestCa::new());
    let handler_ca = Arc::clone(&ca);
    let backend = Backend::start(move |seen| {
        let name = seen.server_name.clone().unwrap();
        let short_lived = name == "short.example";
        let bundle = if short_lived {
            let (chain, key) = handler_ca.leaf_for(&[&name], Duration::from_secs(100));
            format!("{chain}{key}")
        } else {
            handler_ca.bundle(&[&name])
        };
        let reply = Reply::ok(bundle);
        match name.as_str() {
            "s.example" => reply.header("Cache-Control", "public, max-age=60, s-maxage=600"),
            "m.example" => reply.header("Cache-Control", "max-age=120"),
            "short.example" => reply.header("Cache-Control", "max-age=3600"),
            _ => reply,
        }
    })
    .await;
    let src =
        source(HttpSourceConfig::new(backend.url()).with_default_ttl(Duration::from_secs(900)));
    for name in ["s.example", "m.example", "d.example", "short.example"] {
        src.get(name).await.unwrap().unwrap();
    }
    assert!(off_by(src.entry("s.example").unwrap().expires, 600) < 5.0);
    assert!(off_by(src.entry("m.example").unwrap().expires, 120) < 5.0);
    assert!(off_by(src.entry("d.example").unwrap().expires, 900) < 5.0);
    assert!(
        off_by(src.entry("short.example").unwrap().expires, 100) < 5.0,
        "never beyond the certificate's not-after"
    );

    let fixed = source(HttpSourceConfig::new(backend.url()).with_ttl(Duration::from_secs(30)));
    fixed.get("s.example").await.unwrap().unwrap();
    assert!(
        off_by(fixed.entry("s.example").unwrap().expires, 30) < 5.0,
        "the fixed TTL wins"
    );
}

#[tokio::test]
async fn an_expired_entry_is_fetched_again() {
    let ca = Arc::new(TestCa::new());
    let bundle = ca.bundle(&["one.example"]);
    let backend =
        Backend::start(move |_| Reply::ok(bundle.clone()).header("Cache-Control", "max-age=1"))
            .await;
    let src = source(HttpSourceConfig::new(backend.url()));
    src.get("one.example").await.unwrap().unwrap();
    src.get("one.example").await.unwrap().unwrap();
    assert_eq!(backend.count(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        src.lookup("one.example").is_none(),
        "expired entries are not served"
    );
    src.get("one.example").await.unwrap().unwrap();
    assert_eq!(backend.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_going_away_does_not_cancel_the_fetch() {
    let ca = Arc::new(TestCa::new());
    let bundle = ca.bundle(&["slow.example"]);
    let backend =
        Backend::start(move |_| Reply::ok(bundle.clone()).delay(Duration::from_millis(500))).await;
    let src = source(HttpSourceConfig::new(backend.url()));
    let mut events = src.subscribe();
    // The waiting caller gives up long before the backend answers.
    let gave_up = tokio::time::timeout(Duration::from_millis(100), src.get("slow.example")).await;
    assert!(gave_up.is_err());
    assert!(src.lookup("slow.example").is_none());
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(event, SourceEvent::Fetched { ref name, .. } if name == "slow.example"));
    assert!(
        src.lookup("slow.example").is_some(),
        "the fetch finished for the others"
    );
    src.get("slow.example").await.unwrap().unwrap();
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn warm_restart_from_encrypted_files_keeps_the_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let key = cert_encrypted::SecretKey::generate().unwrap();
    let storage = || -> Arc<dyn Storage> {
        Arc::new(cert_encrypted::Encrypted::new(
            cert_file::FileStorage::new(dir.path()),
            cert_encrypted::KeyRing::new(key.clone()),
        ))
    };
    let ca = Arc::new(TestCa::new());
    let bundle = ca.bundle(&["warm.example"]);
    let backend =
        Backend::start(move |_| Reply::ok(bundle.clone()).header("Cache-Control", "max-age=600"))
            .await;

    let first = source(HttpSourceConfig::new(backend.url()).with_storage(storage()));
    let mut events = first.subscribe();
    let cert = first.get("warm.example").await.unwrap().unwrap();
    let expires = first.entry("warm.example").unwrap().expires;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            SourceEvent::Persisted { name } if name == "warm.example" => break,
            SourceEvent::StorageFailed { error, .. } => panic!("{error}"),
            _ => {}
        }
    }
    let key_path = first.storage_key("warm.example");
    drop(first);

    // Sealed on disk: no PEM in the file.
    let on_disk = walk(dir.path());
    assert!(!on_disk.is_empty());
    for bytes in &on_disk {
        assert!(!bytes.windows(11).any(|w| w == b"PRIVATE KEY"));
    }

    // A restart while the backend is down serves the warm copy with its original expiry.
    backend.set_handler(|_| Reply::status(503));
    let second = source(HttpSourceConfig::new(backend.url()).with_storage(storage()));
    assert_eq!(second.warm_from_storage().await.unwrap(), 1);
    let served = second.lookup("warm.example").expect("served at once");
    assert_eq!(served.cert[0], cert.cert[0]);
    let restored = second.entry("warm.example").unwrap().expires;
    assert!(restored <= expires, "a restart never extends the entry");
    assert!(expires.duration_since(restored).unwrap() < Duration::from_millis(1));

    // Without warming, the first handshake reads it from storage, not the backend.
    let third = source(HttpSourceConfig::new(backend.url()).with_storage(storage()));
    let mut events = third.subscribe();
    assert!(third.get("warm.example").await.unwrap().is_some());
    assert_eq!(third.entry("warm.example").unwrap().expires, restored);
    assert!(matches!(
        &drain(&mut events)[..],
        [SourceEvent::Loaded { .. }]
    ));
    assert_eq!(backend.count(), 1);
    assert!(storage().exists(&key_path).await.unwrap());
}

fn walk(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(std::fs::read(path).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn stale_if_error_serves_an_expired_certificate_for_a_bounded_time() {
    let ca = Arc::new(TestCa::new());
    let bundle = ca.bundle(&["stale.example"]);
    let backend =
        Backend::start(move |_| Reply::ok(bundle.clone()).header("Cache-Control", "max-age=1"))
            .await;
    let tolerant = source(
        HttpSourceConfig::new(backend.url())
            .with_stale_if_error(Duration::from_millis(1500))
            .with_stale_retry(Duration::from_millis(200)),
    );
    let strict = source(HttpSourceConfig::new(backend.url()));
    let mut events = tolerant.subscribe();
    let cert = tolerant.get("stale.example").await.unwrap().unwrap();
    strict.get("stale.example").await.unwrap().unwrap();
    backend.set_handler(|_| Reply::status(503));
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let stale = tolerant
        .get("stale.example")
        .await
        .unwrap()
        .expect("served stale");
    assert!(Arc::ptr_eq(&stale, &cert));
    assert!(tolerant.entry("stale.example").unwrap().stale);
    assert!(tolerant.lookup("stale.example").is_some());
    assert!(
        drain(&mut events).iter().any(
            |e| matches!(e, SourceEvent::ServingStale { name, .. } if name == "stale.example")
        )
    );
    assert!(matches!(
        strict.get("stale.example").await,
        Err(SourceError::Status { status: 503 })
    ));
    assert!(strict.lookup("stale.example").is_none());

    // Within the retry interval, no new request; afterwards one, in the background.
    let before = backend.count();
    tolerant.get("stale.example").await.unwrap().unwrap();
    assert_eq!(backend.count(), before);
    tokio::time::sleep(Duration::from_millis(250)).await;
    tolerant.get("stale.example").await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(backend.count(), before + 1);

    // The grace is bounded.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(tolerant.get("stale.example").await.is_err());
    assert!(tolerant.lookup("stale.example").is_none());
}

#[tokio::test]
async fn memory_is_bounded() {
    let ca = Arc::new(TestCa::new());
    let handler_ca = Arc::clone(&ca);
    let backend = Backend::start(move |seen| {
        Reply::ok(handler_ca.bundle(&[seen.server_name.as_deref().unwrap()]))
    })
    .await;
    let src = source(HttpSourceConfig::new(backend.url()).with_capacity(3));
    for i in 0..6 {
        src.get(&format!("n{i}.example")).await.unwrap().unwrap();
        assert!(src.len() <= 3);
    }
    assert_eq!(src.len(), 3);
    assert!(src.lookup("n5.example").is_some(), "the newest stays");
}
