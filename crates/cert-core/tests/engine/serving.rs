//! Serving: real TLS handshakes against the resolver for exact and wildcard names, the
//! lazy acceptor preparing a certificate before the handshake, and certificates added by
//! hand.

use std::sync::Arc;
use std::time::Duration;

use cert_core::rustls::pki_types::ServerName;
use cert_core::rustls::{self, RootCertStore};
use cert_core::tokio_rustls::{TlsAcceptor, TlsConnector};
use cert_core::{MemoryStorage, Store, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{internal, manager};

async fn handshake(
    acceptor: TlsAcceptor,
    roots: RootCertStore,
    server_name: &str,
) -> Result<Vec<u8>, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        if let Ok(mut tls) = acceptor.accept(tcp).await {
            let _ = tls.write_all(b"hello").await;
            let _ = tls.shutdown().await;
        }
    });
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let result = async {
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        tls.read_to_end(&mut body)
            .await
            .map_err(|e| e.to_string())?;
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        assert_eq!(body, b"hello");
        Ok(leaf)
    }
    .await;
    let _ = server.await;
    result
}

#[tokio::test]
async fn real_handshakes_for_exact_and_wildcard_names() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let ca = internal(&storage, Duration::from_secs(3600));
    let m = manager(&storage, vec![ca.clone()]);
    m.manage(["www.example.test", "*.apps.example.test"])
        .await
        .unwrap();
    let mut roots = RootCertStore::empty();
    let root_pem = ca.root_pem().await.unwrap();
    for cert in cert_core::certificate::parse_chain(&root_pem).unwrap() {
        roots.add(cert).unwrap();
    }
    let acceptor = TlsAcceptor::from(Arc::new(server_config(Arc::new(m.resolver())).unwrap()));

    let leaf = handshake(acceptor.clone(), roots.clone(), "www.example.test")
        .await
        .unwrap();
    let info = cert_core::certificate::leaf_info(&leaf.into()).unwrap();
    assert_eq!(info.names, vec!["www.example.test"]);

    let leaf = handshake(acceptor.clone(), roots.clone(), "one.apps.example.test")
        .await
        .unwrap();
    let info = cert_core::certificate::leaf_info(&leaf.into()).unwrap();
    assert_eq!(info.names, vec!["*.apps.example.test"]);

    // No certificate for an unknown name: the handshake fails.
    let err = handshake(acceptor.clone(), roots.clone(), "other.test").await;
    assert!(err.is_err());

    // A client that does not trust the internal root refuses the certificate.
    let err = handshake(acceptor, RootCertStore::empty(), "www.example.test").await;
    assert!(err.unwrap_err().contains("UnknownIssuer"));
}

#[tokio::test]
async fn unmanaged_certificates_are_served() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let m = manager(&storage, vec![]);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["own.example".to_string(), "*.own.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
    let names = m
        .add_certificate(&cert.pem(), &key.serialize_pem())
        .unwrap();
    assert_eq!(names, vec!["own.example", "*.own.example"]);
    assert!(m.cache().get("x.own.example").is_some());
    assert!(
        storage.list("", true).await.unwrap().is_empty(),
        "nothing stored"
    );
    assert!(matches!(
        m.manage(["no-issuer.example"]).await.unwrap_err()[0].1,
        cert_core::ManageError::NoIssuer
    ));
}

#[tokio::test]
async fn lazy_accept_prepares_the_certificate_before_the_handshake() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let ca = internal(&storage, Duration::from_secs(3600));
    let m = manager(&storage, vec![ca.clone()]);
    let config = Arc::new(server_config(Arc::new(m.resolver())).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_manager = m.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let seen = Arc::new(parking_lot::Mutex::new(None));
        let seen_in = Arc::clone(&seen);
        let mut tls = cert_core::accept_lazy(tcp, config, |name| async move {
            *seen_in.lock() = name.clone();
            if let Some(name) = name {
                server_manager.manage([name]).await.unwrap();
            }
        })
        .await
        .unwrap();
        tls.write_all(b"hi").await.unwrap();
        tls.shutdown().await.unwrap();
        seen.lock().clone()
    });
    let mut roots = RootCertStore::empty();
    for cert in cert_core::certificate::parse_chain(&ca.root_pem().await.unwrap()).unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("late.example").unwrap(), tcp)
        .await
        .unwrap();
    let mut body = Vec::new();
    tls.read_to_end(&mut body).await.unwrap();
    assert_eq!(body, b"hi");
    assert_eq!(server.await.unwrap().as_deref(), Some("late.example"));
    assert!(m.cache().get("late.example").is_some());
}
