//! On-demand TLS under a flood of server names: one decision per name however many
//! handshakes wait, denials remembered for `deny_ttl`, a cap on decisions in flight, and an
//! `https://` ask URL verified against an extra root. Real local ask servers throughout.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cert_core::rustls;
use cert_core::testing::CountingIssuer;
use cert_core::tokio_rustls::TlsAcceptor;
use cert_core::{
    CertManager, InternalIssuer, InternalIssuerConfig, Issuer, ManagerConfig, MemoryStorage,
    OnDemandConfig, Store,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

struct Node {
    manager: CertManager,
    issuer: Arc<CountingIssuer>,
}

impl Node {
    fn new(on_demand: OnDemandConfig) -> Node {
        let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
        let issuer = CountingIssuer::new(Arc::new(InternalIssuer::new(
            Arc::clone(&storage),
            InternalIssuerConfig::default(),
        )));
        let manager = CertManager::new(
            storage,
            Arc::new(cert_core::Cache::new(1000)),
            vec![Arc::clone(&issuer) as Arc<dyn Issuer>],
            ManagerConfig::default(),
        );
        manager.enable_on_demand(on_demand);
        Node { manager, issuer }
    }

    /// Runs the handshake preparation for `name`, bounded so a hang fails the test; true
    /// when a certificate for `name` is served afterwards.
    async fn handshake(&self, name: &str) -> bool {
        tokio::time::timeout(
            Duration::from_secs(20),
            self.manager.prepare_handshake(Some(name.to_owned())),
        )
        .await
        .expect("the handshake preparation finishes within its bounds");
        self.manager.cache().get(name).is_some()
    }
}

/// A local ask endpoint: 200 for names under `.ok.test`, 403 for others, or 500 for all
/// while `broken`; answers after `delay` and records the names asked and the most requests
/// it had in flight at once.
struct AskServer {
    url: String,
    asked: Arc<parking_lot::Mutex<Vec<String>>>,
    max_in_flight: Arc<AtomicUsize>,
    broken: Arc<std::sync::atomic::AtomicBool>,
}

impl AskServer {
    async fn start(delay: Duration) -> AskServer {
        Self::start_inner(delay, None).await
    }

    async fn start_inner(delay: Duration, tls: Option<TlsAcceptor>) -> AskServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/ask", listener.local_addr().unwrap());
        let asked = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server = AskServer {
            url,
            asked: Arc::clone(&asked),
            max_in_flight: Arc::clone(&max_in_flight),
            broken: Arc::clone(&broken),
        };
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (asked, in_flight, max_in_flight, broken, tls) = (
                    Arc::clone(&asked),
                    Arc::clone(&in_flight),
                    Arc::clone(&max_in_flight),
                    Arc::clone(&broken),
                    tls.clone(),
                );
                tokio::spawn(async move {
                    let answer = move |domain: String| {
                        let (asked, in_flight, max_in_flight, broken) = (
                            Arc::clone(&asked),
                            Arc::clone(&in_flight),
                            Arc::clone(&max_in_flight),
                            Arc::clone(&broken),
                        );
                        async move {
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            max_in_flight.fetch_max(now, Ordering::SeqCst);
                            asked.lock().push(domain.clone());
                            tokio::time::sleep(delay).await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            if broken.load(Ordering::SeqCst) {
                                "500 Internal Server Error"
                            } else if domain.ends_with(".ok.test") {
                                "200 OK"
                            } else {
                                "403 Forbidden"
                            }
                        }
                    };
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve(stream, answer).await;
                            }
                        }
                        None => serve(tcp, answer).await,
                    }
                });
            }
        });
        server
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().clone()
    }
}

/// Answers HTTP/1.1 requests on one connection (the client may keep it alive).
async fn serve<S, F, Fut>(mut stream: S, answer: F)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = &'static str>,
{
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        buffer.drain(..end + 4);
        let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
        let domain = target
            .split_once("domain=")
            .map(|(_, d)| d.split('&').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let status = answer(domain).await;
        let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn concurrent_handshakes_for_one_name_share_one_ask() {
    let ask = AskServer::start(Duration::from_millis(200)).await;
    let node = Node::new(OnDemandConfig::default().with_ask_url(&ask.url));

    let served = futures::future::join_all((0..200).map(|_| node.handshake("one.ok.test"))).await;
    assert!(served.iter().all(|s| *s));
    assert_eq!(
        ask.asked(),
        vec!["one.ok.test"],
        "one ask for 200 handshakes"
    );
    assert_eq!(node.issuer.calls(), 1);

    let served = futures::future::join_all((0..200).map(|_| node.handshake("evil.test"))).await;
    assert!(served.iter().all(|s| !*s));
    assert_eq!(ask.asked(), vec!["one.ok.test", "evil.test"]);
    assert_eq!(node.issuer.calls(), 1);
}

#[tokio::test]
async fn a_denied_name_is_not_asked_again_within_deny_ttl() {
    let ask = AskServer::start(Duration::ZERO).await;
    let node = Node::new(
        OnDemandConfig::default()
            .with_ask_url(&ask.url)
            .with_deny_ttl(Duration::from_millis(600)),
    );
    for _ in 0..5 {
        assert!(!node.handshake("evil.test").await);
    }
    assert_eq!(ask.asked(), vec!["evil.test"], "the denial is remembered");

    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!node.handshake("evil.test").await);
    assert_eq!(ask.asked().len(), 2, "asked again once the denial expired");

    // The decision function's denials are remembered as well.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let node = Node::new(OnDemandConfig::default().with_decision(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { false }
    }));
    for _ in 0..5 {
        assert!(!node.handshake("nope.test").await);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failing_ask_url_is_not_remembered() {
    let ask = AskServer::start(Duration::ZERO).await;
    ask.broken.store(true, Ordering::SeqCst);
    let node = Node::new(OnDemandConfig::default().with_ask_url(&ask.url));
    assert!(!node.handshake("a.ok.test").await, "a 5xx refuses");
    ask.broken.store(false, Ordering::SeqCst);
    assert!(
        node.handshake("a.ok.test").await,
        "but is not held against the name"
    );
    assert_eq!(ask.asked().len(), 2);
}

#[tokio::test]
async fn asks_in_flight_are_capped_and_the_rest_refused_at_once() {
    let ask = AskServer::start(Duration::from_millis(500)).await;
    let node = Node::new(
        OnDemandConfig::default()
            .with_ask_url(&ask.url)
            .with_max_concurrent_asks(4)
            .with_rate_limit(1000, Duration::from_secs(60)),
    );
    let names: Vec<String> = (0..100).map(|i| format!("n{i}.ok.test")).collect();
    let started = tokio::time::Instant::now();
    let timed = futures::future::join_all(names.iter().map(|name| async {
        let served = node.handshake(name).await;
        (served, started.elapsed())
    }))
    .await;
    assert!(ask.max_in_flight.load(Ordering::SeqCst) <= 4);
    assert_eq!(
        ask.asked().len(),
        4,
        "the others were refused without asking"
    );
    let served: Vec<_> = timed.iter().filter(|(served, _)| *served).collect();
    assert_eq!(served.len(), 4);
    let refused_late = timed
        .iter()
        .filter(|(served, took)| !served && *took >= Duration::from_millis(400))
        .count();
    assert_eq!(refused_late, 0, "refusals do not wait for a permit");

    // A refusal for lack of a permit is not remembered.
    let refused = names
        .iter()
        .zip(&timed)
        .find(|(_, (served, _))| !served)
        .map(|(name, _)| name.clone())
        .unwrap();
    assert!(node.handshake(&refused).await);
    assert_eq!(ask.asked().len(), 5);
}

/// A CA and an ask server over TLS with a certificate for 127.0.0.1 it signed.
async fn tls_ask_server() -> (AskServer, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ask test CA");
    let ca =
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server =
        AskServer::start_inner(Duration::ZERO, Some(TlsAcceptor::from(Arc::new(config)))).await;
    (server, ca.pem())
}

#[tokio::test]
async fn https_ask_url_verified_with_an_extra_root() {
    let (ask, ca_pem) = tls_ask_server().await;
    assert!(ask.url.starts_with("https://"));
    let node = Node::new(
        OnDemandConfig::default()
            .with_ask_url(&ask.url)
            .with_ask_root_pem(ca_pem)
            .unwrap(),
    );
    assert!(node.handshake("a.ok.test").await);
    assert!(!node.handshake("evil.test").await);
    assert_eq!(ask.asked(), vec!["a.ok.test", "evil.test"]);

    // Without the root the server is not trusted: nothing is asked, nothing allowed.
    let untrusted = Node::new(OnDemandConfig::default().with_ask_url(&ask.url));
    assert!(!untrusted.handshake("b.ok.test").await);
    assert_eq!(ask.asked().len(), 2);
    assert_eq!(untrusted.issuer.calls(), 0);
}
