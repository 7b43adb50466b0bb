//! Real TLS handshakes through the resolver and `accept_lazy`: one backend request for a
//! thousand handshakes, a fetch that outlives both ends of a handshake, and managed and
//! sourced certificates side by side.

use std::sync::Arc;
use std::time::Duration;

use cert_core::rustls::pki_types::ServerName;
use cert_core::{Cache, CertResolver, MemoryStorage, accept_lazy};
use cert_source::{HttpSourceConfig, SourceEvent};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{Backend, Reply, TestCa};
use crate::source;

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
