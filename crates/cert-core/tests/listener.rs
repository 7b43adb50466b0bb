//! The TLS listener with real TCP clients: axum over HTTP/1.1 and HTTP/2, hyper through
//! `incoming()`, silent clients that neither hold up others nor outlive the deadline,
//! failed handshakes that leave the listener serving, the bound on handshakes in flight,
//! and the preparation step.
#![allow(clippy::unwrap_used, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use cert_core::listener::{ListenerOptions, TlsConnectInfo, TlsListener};
use cert_core::rustls::pki_types::ServerName;
use cert_core::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use cert_core::tokio_rustls::TlsConnector;
use cert_core::tokio_rustls::client::TlsStream;
use cert_core::{
    Cache, CertManager, CertResolver, InternalIssuer, InternalIssuerConfig, ManagerConfig,
    MemoryStorage, Store, server_config,
};
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An engine holding a certificate for `localhost` from the internal CA, and that CA's root.
struct Engine {
    manager: CertManager,
    root_pem: String,
}

async fn engine() -> Engine {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let ca = InternalIssuer::new(Arc::clone(&storage), InternalIssuerConfig::default());
    let manager = CertManager::new(
        Arc::clone(&storage),
        Arc::new(Cache::new(10)),
        vec![Arc::new(ca)],
        ManagerConfig::default(),
    );
    manager.manage(["localhost"]).await.unwrap();
    let root_pem = InternalIssuer::load_root(storage.as_ref(), "local")
        .await
        .unwrap()
        .expect("the CA was created");
    Engine { manager, root_pem }
}

impl Engine {
    fn server_config(&self) -> ServerConfig {
        server_config(Arc::new(self.manager.resolver())).unwrap()
    }
}

fn client_config(root_pem: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in cert_core::certificate::parse_chain(root_pem).unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn connect(
    addr: SocketAddr,
    client: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(client).connect(name, tcp).await
}

/// `GET path` over HTTP/1.1 (ALPN `http/1.1`): the whole response.
async fn get_http1(addr: SocketAddr, root_pem: &str, path: &str) -> String {
    let mut tls = connect(addr, client_config(root_pem, &[b"http/1.1"]))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // A peer that closes without close_notify ends the read with an error: what was read
    // is the response either way.
    let _ = tls.read_to_end(&mut response).await;
    String::from_utf8(response).unwrap()
}

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "hello over TLS" }))
        .route(
            "/peer",
            get(|ConnectInfo(tls): ConnectInfo<TlsConnectInfo>| async move {
                format!("{} {:?}", tls.remote_addr, tls.server_name)
            }),
        )
}

/// Serves [`app`] through `axum::serve` on `listener`.
fn serve_axum(listener: TlsListener) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    let service = app().into_make_service_with_connect_info::<TlsConnectInfo>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    addr
}

#[tokio::test]
async fn axum_serves_https_over_http1_and_http2() {
    let engine = engine().await;
    let listener = TlsListener::bind("127.0.0.1:0", engine.server_config())
        .await
        .unwrap();
    let addr = serve_axum(listener);

    let page = get_http1(addr, &engine.root_pem, "/").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.ends_with("hello over TLS"), "{page}");

    // Handlers see the client's address and the server name it asked for.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client_addr = tcp.local_addr().unwrap();
    let mut tls = TlsConnector::from(client_config(&engine.root_pem, &[b"http/1.1"]))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /peer HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut page = Vec::new();
    let _ = tls.read_to_end(&mut page).await;
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.ends_with(&format!("{client_addr} Some(\"localhost\")")),
        "{page}"
    );

    // `server_config` offers h2 first: a client that prefers it gets HTTP/2 from axum.
    let tls = connect(addr, client_config(&engine.root_pem, &[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("https://localhost/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello over TLS");
}

#[tokio::test]
async fn silent_clients_do_not_hold_up_others_and_are_closed_at_the_deadline() {
    let engine = engine().await;
    let deadline = Duration::from_secs(3);
    let options = ListenerOptions::default().with_handshake_timeout(deadline);
    let listener = TlsListener::bind_with("127.0.0.1:0", engine.server_config(), options)
        .await
        .unwrap();
    let addr = serve_axum(listener);

    // Clients that connect and never send a ClientHello.
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let page = get_http1(addr, &engine.root_pem, "/").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(
        opened.elapsed() < deadline,
        "served while the silent clients wait: {:?}",
        opened.elapsed()
    );

    // Each silent connection is closed by the server once its deadline has passed.
    for mut tcp in silent {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf))
            .await
            .expect("the server closes a silent connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let closed_after = opened.elapsed();
    assert!(
        closed_after >= deadline - Duration::from_millis(100),
        "closed at the deadline, not before: {closed_after:?}"
    );
}

#[tokio::test]
async fn failed_handshakes_leave_the_listener_serving() {
    let engine = engine().await;
    let listener = TlsListener::bind("127.0.0.1:0", engine.server_config())
        .await
        .unwrap();
    let addr = serve_axum(listener);

    // Plain HTTP on the TLS port: the connection is closed without an HTTP answer.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), plain.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

    // A client that does not trust the root aborts the handshake.
    let other_ca = engine_root_of_another_ca().await;
    let refused = connect(addr, client_config(&other_ca, &[b"http/1.1"])).await;
    assert!(refused.is_err(), "the certificate is not from that CA");

    // A server name no certificate covers: the handshake fails on the server side.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let unknown = TlsConnector::from(client_config(&engine.root_pem, &[b"http/1.1"]))
        .connect(ServerName::try_from("unknown.test").unwrap(), tcp)
        .await;
    assert!(unknown.is_err());

    let page = get_http1(addr, &engine.root_pem, "/").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
}

/// The root of a CA that signed nothing the listener serves.
async fn engine_root_of_another_ca() -> String {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    InternalIssuer::new(storage, InternalIssuerConfig::default())
        .root_pem()
        .await
        .unwrap()
}

#[tokio::test]
async fn incoming_feeds_hyper() {
    let engine = engine().await;
    let mut config = engine.server_config();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = TlsListener::bind("127.0.0.1:0", config).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming = listener.incoming();
    assert_eq!(incoming.local_addr(), addr);
    tokio::spawn(async move {
        while let Some(tls) = incoming.next().await {
            let peer = tls.get_ref().0.peer_addr().unwrap();
            let service = hyper::service::service_fn(move |_request| async move {
                Ok::<_, Infallible>(hyper::Response::new(format!("hello {peer}")))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service),
            );
        }
    });
    let page = get_http1(addr, &engine.root_pem, "/").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("hello 127.0.0.1:"), "{page}");
}

#[tokio::test]
async fn max_handshakes_bounds_the_connections_in_their_handshake() {
    let engine = engine().await;
    let deadline = Duration::from_secs(1);
    let options = ListenerOptions::default()
        .with_handshake_timeout(deadline)
        .with_max_handshakes(1);
    let listener = TlsListener::bind_with("127.0.0.1:0", engine.server_config(), options)
        .await
        .unwrap();
    let addr = serve_axum(listener);

    let _silent = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let page = get_http1(addr, &engine.root_pem, "/").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(
        started.elapsed() >= deadline - Duration::from_millis(300),
        "the one slot was taken until the silent client's deadline: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_preparation_step_runs_before_the_certificate_is_chosen() {
    let engine = engine().await;
    // The listener serves from a cache of its own, empty until the preparation step
    // copies the engine's certificate into it.
    let served = Arc::new(Cache::new(10));
    let config = server_config(Arc::new(CertResolver::new(Arc::clone(&served)))).unwrap();
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let options = ListenerOptions::default().with_prepare({
        let (served, seen) = (Arc::clone(&served), Arc::clone(&seen));
        let source = Arc::clone(engine.manager.cache());
        move |hello: cert_core::HelloInfo| {
            let name = hello.server_name.unwrap_or_default();
            if let Some(cert) = source.get(&name) {
                served.insert(&name, cert);
            }
            seen.lock().push(name);
            async {}
        }
    });
    let with_prepare = TlsListener::bind_with("127.0.0.1:0", config.clone(), options)
        .await
        .unwrap();
    let page = get_http1(serve_axum(with_prepare), &engine.root_pem, "/").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert_eq!(*seen.lock(), vec!["localhost".to_owned()]);

    // The same configuration without the step: the cache it reads now holds the
    // certificate, so remove it to show what the step did.
    served.remove("localhost");
    let without = TlsListener::bind("127.0.0.1:0", config).await.unwrap();
    let refused = connect(
        serve_axum(without),
        client_config(&engine.root_pem, &[b"http/1.1"]),
    )
    .await;
    assert!(refused.is_err(), "no certificate without the step");
}
