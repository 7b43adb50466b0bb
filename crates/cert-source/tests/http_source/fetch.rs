//! Fetching from the backend: hits and misses, the query and headers sent, negative
//! entries, errors never cached, an HTTPS backend, and configuration errors.

use std::sync::Arc;
use std::time::Duration;

use cert_core::CertSource;
use cert_source::{HttpSource, HttpSourceConfig, SourceError, SourceEvent};

use crate::common::{Backend, Reply, TestCa, drain};
use crate::source;

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
