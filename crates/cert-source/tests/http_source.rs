//! The HTTP certificate source against a real HTTP(S) backend on loopback, and real TLS
//! handshakes through the resolver and `accept_lazy`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cert_core::rustls::pki_types::ServerName;
use cert_core::{Cache, CertResolver, CertSource, MemoryStorage, Storage, accept_lazy};
use cert_source::{HttpSource, HttpSourceConfig, SourceError, SourceEvent};
use common::{Backend, Reply, TestCa, drain};
use tokio::net::{TcpListener, TcpStream};

fn source(config: HttpSourceConfig) -> HttpSource {
    HttpSource::new(config).unwrap()
}

/// How far `time` is from `now + secs`, in seconds.
fn off_by(time: SystemTime, secs: u64) -> f64 {
    let expected = SystemTime::now() + Duration::from_secs(secs);
    match time.duration_since(expected) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => e.duration().as_secs_f64(),
    }
}

#[tokio::test]
async fn hit_miss_query_and_headers() {
    let ca = Arc::new(TestCa::new());
    let bundle = ca.bundle(&["a.example"]);
    let backend = Backend::start(move |_| Reply::ok(bundle.clone())).await;
    let src = source(
        HttpSourceConfig::new(format!("{}?v=1", backend.url()))
            .with_query_parameter("sni")
            .with_header("Authorization", "Bearer t0ken")
            .unwrap()
            .with_header("X-Fleet", "edge")
            .unwrap(),
    );
    assert!(src.lookup("a.example").is_none());
    let first = src.get("A.Example.").await.unwrap().expect("a certificate");
    assert_eq!(backend.count(), 1);
    let second = src.get("a.example").await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&first, &second), "served from memory");
    assert!(Arc::ptr_eq(&src.lookup("a.example").unwrap(), &first));
    assert_eq!(backend.count(), 1, "a hit makes no request");

    let seen = &backend.seen()[0];
    assert_eq!(seen.target, "/certificate?v=1&sni=a.example");
    assert_eq!(seen.headers["authorization"], "Bearer t0ken");
    assert_eq!(seen.headers["x-fleet"], "edge");
    assert!(
        !format!("{src:?}").contains("t0ken"),
        "header values never printed"
    );
}

#[tokio::test]
async fn no_content_is_a_negative_entry() {
    let backend = Backend::start(|_| Reply::status(204)).await;
    let src =
        source(HttpSourceConfig::new(backend.url()).with_negative_ttl(Duration::from_millis(300)));
    let mut events = src.subscribe();
    assert!(src.get("none.example").await.unwrap().is_none());
    assert!(src.get("none.example").await.unwrap().is_none());
    assert!(src.lookup("none.example").is_none());
    assert_eq!(backend.count(), 1, "the negative entry answers");
    let entry = src.entry("none.example").unwrap();
    assert!(entry.negative);
    assert!(
        matches!(&drain(&mut events)[..], [SourceEvent::NotFound { name, .. }] if name == "none.example")
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(src.get("none.example").await.unwrap().is_none());
    assert_eq!(
        backend.count(),
        2,
        "asked again once the negative entry expired"
    );
}

#[tokio::test]
async fn errors_are_never_cached() {
    let ca = Arc::new(TestCa::new());
    let backend = Backend::start(|_| Reply::status(500)).await;
    let src = source(HttpSourceConfig::new(backend.url()).with_timeout(Duration::from_millis(300)));
    let mut events = src.subscribe();
    let name = "e.example";
    let (chain, _) = ca.leaf_for(&[name], Duration::from_secs(3600));
    let (_, other_key) = ca.leaf_for(&[name], Duration::from_secs(3600));
    let wrong_name = ca.bundle(&["other.example"]);
    let expired = ca.expired_bundle(&[name]);
    let good = ca.bundle(&[name]);

    type Check = fn(&SourceError) -> bool;
    let cases: Vec<(Reply, Check)> = vec![
        (Reply::status(500), |e| {
            matches!(e, SourceError::Status { status: 500 })
        }),
        (Reply::status(404), |e| {
            matches!(e, SourceError::Status { status: 404 })
        }),
        (Reply::ok("not a PEM bundle"), |e| {
            matches!(e, SourceError::Bundle(_))
        }),
        (Reply::ok(format!("{chain}{other_key}")), |e| {
            matches!(
                e,
                SourceError::Bundle(cert_core::CertificateError::KeyMismatch)
            )
        }),
        (Reply::ok(wrong_name), |e| {
            matches!(e, SourceError::NameMismatch { .. })
        }),
        (Reply::ok(expired), |e| {
            matches!(e, SourceError::Expired { .. })
        }),
        (Reply::ok(good.clone()).delay(Duration::from_secs(2)), |e| {
            matches!(e, SourceError::Timeout(_))
        }),
    ];
    for (i, (reply, expected)) in cases.into_iter().enumerate() {
        backend.set_handler(move |_| reply.clone());
        let err = src.get(name).await.unwrap_err();
        assert!(expected(&err), "case {i}: {err:?}");
        assert_eq!(
            backend.count(),
            i + 1,
            "case {i}: every attempt reaches the backend"
        );
        assert!(src.lookup(name).is_none());
        assert!(src.entry(name).is_none(), "case {i}: nothing remembered");
    }
    assert!(
        drain(&mut events)
            .iter()
            .all(|e| matches!(e, SourceEvent::Failed { .. }))
    );
    backend.set_handler(move |_| Reply::ok(good.clone()));
    assert!(src.get(name).await.unwrap().is_some());
    assert_eq!(backend.count(), 8);
    assert!(
        src.get("bad name/x")
            .await
            .is_err_and(|e| matches!(e, SourceError::InvalidName(_)))
    );
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

/// A TLS server whose preparation step fills the resolver's sources.
async fn tls_server(resolver: Arc<CertResolver>) -> u16 {
    tls_server_with_deadline(resolver, Duration::from_secs(30)).await
}

/// The same, giving up on (and dropping) a connection whose handshake takes longer than
/// `deadline`.
async fn tls_server_with_deadline(resolver: Arc<CertResolver>, deadline: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = Arc::new(cert_core::server_config(resolver.clone()).unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (config, resolver) = (config.clone(), resolver.clone());
            tokio::spawn(async move {
                let accept = accept_lazy(tcp, config, |name| async move {
                    resolver.prepare(name.as_deref()).await;
                });
                let _ = tokio::time::timeout(deadline, accept).await;
            });
        }
    });
    port
}

/// Completes a TLS handshake for `name` and returns the leaf the server presented.
async fn handshake(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    name: &str,
) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let tls = connector.connect(server_name, tcp).await?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_handshakes_for_a_cold_name_make_one_request() {
    let ca = Arc::new(TestCa::new());
    let bundle = ca.bundle(&["cold.example"]);
    let backend =
        Backend::start(move |_| Reply::ok(bundle.clone()).delay(Duration::from_millis(300))).await;
    let src = source(HttpSourceConfig::new(backend.url()));
    let resolver = Arc::new(CertResolver::new(Arc::new(Cache::new(10))).with_source(Arc::new(src)));
    let port = tls_server(resolver).await;
    let connector = tokio_rustls::TlsConnector::from(ca.client_config());

    let mut clients = Vec::new();
    for _ in 0..1000 {
        let connector = connector.clone();
        clients.push(tokio::spawn(async move {
            handshake(&connector, port, "cold.example").await
        }));
    }
    let mut leaves = std::collections::HashSet::new();
    for client in clients {
        leaves.insert(client.await.unwrap().expect("handshake"));
    }
    assert_eq!(leaves.len(), 1, "every client got the one certificate");
    assert_eq!(
        backend.count(),
        1,
        "one backend request for 1,000 handshakes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_given_up_by_both_ends_leaves_the_fetch_running() {
    let ca = Arc::new(TestCa::new());
    let bundle = ca.bundle(&["gone.example"]);
    let backend =
        Backend::start(move |_| Reply::ok(bundle.clone()).delay(Duration::from_millis(600))).await;
    let src = source(HttpSourceConfig::new(backend.url()));
    let mut events = src.subscribe();
    let resolver =
        Arc::new(CertResolver::new(Arc::new(Cache::new(10))).with_source(Arc::new(src.clone())));
    let port = tls_server_with_deadline(resolver, Duration::from_millis(150)).await;
    let connector = tokio_rustls::TlsConnector::from(ca.client_config());

    // The client hangs up after 50 ms; the server drops the handshake after 150 ms.
    let impatient = tokio::time::timeout(
        Duration::from_millis(50),
        handshake(&connector, port, "gone.example"),
    )
    .await;
    assert!(impatient.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(src.lookup("gone.example").is_none(), "still fetching");

    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(event, SourceEvent::Fetched { ref name, .. } if name == "gone.example"));
    let leaf = handshake(&connector, port, "gone.example").await.unwrap();
    assert_eq!(leaf, src.lookup("gone.example").unwrap().cert[0].to_vec());
    assert_eq!(backend.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_and_sourced_certificates_side_by_side() {
    let ca = Arc::new(TestCa::new());
    let sourced = ca.bundle(&["*.sourced.example"]);
    let backend = Backend::start(move |seen| match seen.server_name.as_deref() {
        Some(name) if name.ends_with(".sourced.example") => Reply::ok(sourced.clone()),
        _ => Reply::status(204),
    })
    .await;

    // The manager's certificates live in its cache, issued by its internal CA.
    let storage: Arc<dyn cert_core::Store> = Arc::new(MemoryStorage::new());
    let internal = Arc::new(cert_core::InternalIssuer::new(
        Arc::clone(&storage),
        cert_core::InternalIssuerConfig::default(),
    ));
    let manager = cert_core::CertManager::new(
        Arc::clone(&storage),
        Arc::new(Cache::new(100)),
        vec![internal.clone()],
        cert_core::ManagerConfig::default(),
    );
    manager.manage(["managed.example"]).await.unwrap();
    let managed_leaf = manager.cache().get("managed.example").unwrap().cert[0].to_vec();

    let src = source(HttpSourceConfig::new(backend.url()));
    let resolver = Arc::new(manager.resolver().with_source(Arc::new(src.clone())));
    let port = tls_server(resolver.clone()).await;

    // The client trusts the manager's internal CA and the backend's CA.
    let mut roots = cert_core::rustls::RootCertStore::empty();
    roots.add(ca.root()).unwrap();
    let internal_root = internal.root_pem().await.unwrap();
    let internal_root = cert_core::certificate::parse_chain(&internal_root).unwrap();
    roots.add(internal_root[0].clone()).unwrap();
    let provider = Arc::new(cert_core::rustls::crypto::aws_lc_rs::default_provider());
    let client = cert_core::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));

    let leaf = handshake(&connector, port, "a.sourced.example")
        .await
        .unwrap();
    assert_eq!(
        leaf,
        src.lookup("a.sourced.example").unwrap().cert[0].to_vec()
    );
    assert_eq!(backend.count_for("a.sourced.example"), 1);

    // The managed name is answered from the manager's cache: the backend is not asked.
    let leaf = handshake(&connector, port, "managed.example")
        .await
        .unwrap();
    assert_eq!(leaf, managed_leaf);
    assert_eq!(backend.count_for("managed.example"), 0);
    assert!(src.lookup("managed.example").is_none());

    // A name neither has: the backend says 204 and the handshake fails.
    assert!(
        handshake(&connector, port, "unknown.example")
            .await
            .is_err()
    );
    assert_eq!(backend.count_for("unknown.example"), 1);
}

#[tokio::test]
async fn https_backend_with_trusted_roots_only() {
    let ca = Arc::new(TestCa::new());
    let bundle = ca.bundle(&["tls.example"]);
    let backend = Backend::start_tls(&ca, move |_| Reply::ok(bundle.clone())).await;
    assert!(backend.url().starts_with("https://"));

    let trusted =
        source(HttpSourceConfig::new(backend.url()).with_root_certificates(vec![ca.root()]));
    assert!(trusted.get("tls.example").await.unwrap().is_some());
    assert_eq!(backend.count(), 1);

    // The platform verifier does not know the test CA: the TLS handshake fails.
    let untrusted = source(HttpSourceConfig::new(backend.url()));
    let err = untrusted.get("tls.example").await.unwrap_err();
    assert!(matches!(err, SourceError::Request(_)), "{err:?}");
    assert_eq!(backend.count(), 1, "no request got through");
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

#[tokio::test]
async fn bad_configuration_is_a_typed_error() {
    for url in [
        "ftp://x/",
        "http://user:pass@host/x",
        "not a url",
        "http://h/x#frag",
    ] {
        // Opted in to plain http, so the URL's other faults are what is refused.
        let err = HttpSource::new(HttpSourceConfig::new(url).allow_plain_http()).unwrap_err();
        assert!(matches!(err, SourceError::Config(_)), "{url}");
        assert!(!err.to_string().contains("pass"));
    }
    assert!(
        HttpSourceConfig::new("http://h/")
            .with_header("bad header", "v")
            .is_err()
    );
    assert!(
        HttpSourceConfig::new("http://h/")
            .with_header("x", "line\nbreak")
            .is_err()
    );
    let shown = format!(
        "{:?}",
        HttpSourceConfig::new("http://h/get?token=s3cret")
            .with_header("authorization", "Bearer s3cret")
            .unwrap()
    );
    assert!(!shown.contains("s3cret"), "{shown}");
    // The source also works as a plain CertSource.
    let src = source(HttpSourceConfig::new("http://127.0.0.1:9/x"));
    let as_source: &dyn CertSource = &src;
    assert!(as_source.lookup("a.example").is_none());
}
