//! Challenge answering without a CA: a TLS-ALPN-01 challenge placed by one node is
//! answered by another (and only on `acme-tls/1` handshakes), and the standalone HTTP-01
//! listener answers tokens placed by another node.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use cert_core::challenge::{ACME_TLS_ALPN, Challenges, Http01Handler};
use cert_core::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use cert_core::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use cert_core::rustls::{self, DigitallySignedStruct, SignatureScheme};
use cert_core::tokio_rustls::TlsConnector;
use cert_core::{
    CertManager, InternalIssuer, InternalIssuerConfig, Issuer, ManagerConfig, MemoryStorage, Store,
    accept_lazy_hello, server_config,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Accepts any certificate and remembers the leaf.
#[derive(Debug, Default)]
struct Recorder(parking_lot::Mutex<Option<CertificateDer<'static>>>);

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock() = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Handshakes with `name`, offering `alpn`; the leaf served, if the handshake succeeded.
async fn leaf(port: u16, name: &str, alpn: &[u8]) -> Option<CertificateDer<'static>> {
    let recorder = Arc::new(Recorder::default());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let connector = TlsConnector::from(Arc::new(config));
    let mut tls = connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), stream)
        .await
        .ok()?;
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    recorder.0.lock().clone()
}

fn has_acme_identifier(der: &CertificateDer<'_>) -> bool {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    cert.extensions()
        .iter()
        .any(|ext| ext.oid.to_id_string() == "1.3.6.1.5.5.7.1.31" && ext.critical)
}

#[tokio::test]
async fn tls_alpn01_is_answered_by_another_node_and_only_for_acme_tls() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let placing = Challenges::new(Arc::clone(&storage));
    let answering = Challenges::new(Arc::clone(&storage));
    let issuer: Arc<dyn Issuer> = Arc::new(InternalIssuer::new(
        Arc::clone(&storage),
        InternalIssuerConfig::default(),
    ));
    let manager = CertManager::new(
        Arc::clone(&storage),
        Arc::new(cert_core::Cache::new(10)),
        vec![issuer],
        ManagerConfig::default(),
    );
    manager.manage(["served.example"]).await.unwrap();

    let resolver = manager.resolver().with_challenges(Arc::clone(&answering));
    let mut config = server_config(Arc::new(resolver)).unwrap();
    config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (config, answering) = (Arc::clone(&config), Arc::clone(&answering));
            tokio::spawn(async move {
                let accepted = accept_lazy_hello(stream, config, |hello| async move {
                    if hello.is_acme_tls_alpn()
                        && let Some(name) = &hello.server_name
                    {
                        answering.prepare_tls_alpn01(name).await;
                    }
                })
                .await;
                if let Ok(mut tls) = accepted {
                    let _ = tls.shutdown().await;
                }
            });
        }
    });

    placing
        .present_tls_alpn01("served.example", &[9u8; 32])
        .await
        .unwrap();
    // The validator gets the challenge certificate from the other node.
    let challenge = leaf(port, "served.example", ACME_TLS_ALPN).await.unwrap();
    assert!(has_acme_identifier(&challenge));
    // A normal client gets the real certificate, never the challenge one.
    let normal = leaf(port, "served.example", b"http/1.1").await.unwrap();
    assert!(!has_acme_identifier(&normal));
    // No challenge for a name: an acme-tls/1 handshake fails rather than falling back.
    assert!(leaf(port, "other.example", ACME_TLS_ALPN).await.is_none());
    // Cleared: validation handshakes fail again.
    placing.clear_tls_alpn01("served.example").await.unwrap();
    assert!(leaf(port, "served.example", ACME_TLS_ALPN).await.is_none());
    assert!(storage.list("challenges", true).await.unwrap().is_empty());
}

async fn get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: a.example\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn http01_listener_answers_tokens_placed_elsewhere() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let placing = Challenges::new(Arc::clone(&storage));
    let answering = Challenges::new(storage);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = Http01Handler::new(answering).serve(listener);

    placing
        .present_http01("tok-1_A", "tok-1_A.thumb")
        .await
        .unwrap();
    let found = get(port, "/.well-known/acme-challenge/tok-1_A").await;
    assert!(found.starts_with("HTTP/1.1 200"), "{found}");
    assert!(found.ends_with("\r\n\r\ntok-1_A.thumb"), "{found}");
    for missing in [
        "/.well-known/acme-challenge/unknown",
        "/.well-known/acme-challenge/../x",
        "/other",
    ] {
        assert!(
            get(port, missing).await.starts_with("HTTP/1.1 404"),
            "{missing}"
        );
    }
    placing.clear_http01("tok-1_A").await.unwrap();
    assert!(
        get(port, "/.well-known/acme-challenge/tok-1_A")
            .await
            .starts_with("HTTP/1.1 404")
    );
    task.abort();
}
