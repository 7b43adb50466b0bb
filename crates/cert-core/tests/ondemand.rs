//! On-demand TLS policy: the "ask" URL (a real local HTTP endpoint), the decision function,
//! both together, and the rate limit, with the internal CA as issuer.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use cert_core::testing::CountingIssuer;
use cert_core::{
    CertManager, InternalIssuer, InternalIssuerConfig, Issuer, ManagerConfig, MemoryStorage,
    OnDemandConfig, Store,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Node {
    manager: CertManager,
    issuer: Arc<CountingIssuer>,
    storage: Arc<dyn Store>,
}

impl Node {
    fn new(on_demand: OnDemandConfig) -> Node {
        let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
        let issuer = CountingIssuer::new(Arc::new(InternalIssuer::new(
            Arc::clone(&storage),
            InternalIssuerConfig::default(),
        )));
        let manager = CertManager::new(
            Arc::clone(&storage),
            Arc::new(cert_core::Cache::new(100)),
            vec![Arc::clone(&issuer) as Arc<dyn Issuer>],
            ManagerConfig::default(),
        );
        manager.enable_on_demand(on_demand);
        Node {
            manager,
            issuer,
            storage,
        }
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

    fn issued(&self) -> usize {
        self.issuer.calls()
    }

    async fn stored_names(&self) -> Vec<String> {
        self.storage
            .list("certificates/local", false)
            .await
            .unwrap_or_default()
    }
}

/// How the ask endpoint answers.
#[derive(Clone, Copy)]
enum Answer {
    /// 200 for names under `.ok.test`, 403 for others.
    Policy,
    /// 500 for everything.
    Broken,
    /// Answers 200 after three seconds.
    Slow,
}

/// A local HTTP endpoint answering `GET /ask?domain=<name>`, recording the names asked.
struct AskServer {
    url: String,
    asked: Arc<parking_lot::Mutex<Vec<String>>>,
}

impl AskServer {
    async fn start(answer: Answer) -> AskServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/ask", listener.local_addr().unwrap());
        let asked = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let seen = Arc::clone(&asked);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    let domain = target
                        .split_once("domain=")
                        .map(|(_, d)| d.split('&').next().unwrap_or_default().to_owned())
                        .unwrap_or_default();
                    seen.lock().push(domain.clone());
                    let status = match answer {
                        Answer::Policy if domain.ends_with(".ok.test") => "200 OK",
                        Answer::Policy => "403 Forbidden",
                        Answer::Broken => "500 Internal Server Error",
                        Answer::Slow => {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            "200 OK"
                        }
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        AskServer { url, asked }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().clone()
    }
}

#[tokio::test]
async fn ask_url_allows_and_denies() {
    let ask = AskServer::start(Answer::Policy).await;
    let node = Node::new(OnDemandConfig::default().with_ask_url(format!("{}?v=1", ask.url)));

    assert!(node.handshake("a.ok.test").await);
    assert_eq!(node.issued(), 1);
    assert_eq!(
        ask.asked(),
        vec!["a.ok.test"],
        "asked with ?domain= appended"
    );

    assert!(!node.handshake("evil.test").await);
    assert_eq!(node.issued(), 1, "a denied name reaches no issuer");
    assert_eq!(
        node.stored_names().await,
        vec!["certificates/local/a.ok.test"]
    );

    // A name already served is not asked about again.
    assert!(node.handshake("a.ok.test").await);
    assert_eq!(ask.asked(), vec!["a.ok.test", "evil.test"]);
}

#[tokio::test]
async fn ask_url_failures_deny() {
    // A server error denies.
    let broken = AskServer::start(Answer::Broken).await;
    let node = Node::new(OnDemandConfig::default().with_ask_url(&broken.url));
    assert!(!node.handshake("a.ok.test").await);
    assert_eq!(broken.asked().len(), 1);

    // Nothing listening denies.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let node2 = Node::new(OnDemandConfig::default().with_ask_url(format!("http://{closed}/ask")));
    assert!(!node2.handshake("a.ok.test").await);

    // An answer slower than the ask timeout denies; the handshake does not wait for it.
    let slow = AskServer::start(Answer::Slow).await;
    let mut config = OnDemandConfig::default().with_ask_url(&slow.url);
    config.ask_timeout = Duration::from_millis(200);
    let node3 = Node::new(config);
    let started = tokio::time::Instant::now();
    assert!(!node3.handshake("a.ok.test").await);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "gave up at the ask timeout"
    );

    for node in [node, node2, node3] {
        assert_eq!(node.issued(), 0);
        assert!(node.stored_names().await.is_empty());
    }
}

#[tokio::test]
async fn decision_and_ask_url_must_both_allow() {
    let ask = AskServer::start(Answer::Policy).await;
    let node = Node::new(
        OnDemandConfig::default()
            .with_decision(|name: String| async move { name.starts_with("d.") })
            .with_ask_url(&ask.url),
    );
    assert!(node.handshake("d.ok.test").await);
    // Refused by the decision: the ask URL is not even asked.
    assert!(!node.handshake("e.ok.test").await);
    // Allowed by the decision, refused by the ask URL.
    assert!(!node.handshake("d.evil.test").await);
    assert_eq!(ask.asked(), vec!["d.ok.test", "d.evil.test"]);
    assert_eq!(node.issued(), 1);
}

#[tokio::test]
async fn without_a_policy_nothing_is_allowed() {
    let node = Node::new(OnDemandConfig::default());
    assert!(!node.handshake("a.ok.test").await);
    assert_eq!(node.issued(), 0);
}

#[tokio::test]
async fn rate_limit_bounds_new_certificates() {
    let node = Node::new(
        OnDemandConfig::default()
            .with_decision(|_| async { true })
            .with_rate_limit(2, Duration::from_secs(2)),
    );
    assert!(node.handshake("one.test").await);
    assert!(node.handshake("two.test").await);
    assert!(!node.handshake("three.test").await, "over the limit");
    assert_eq!(node.issued(), 2);
    // Names already served cost nothing.
    assert!(node.handshake("one.test").await);

    // A refusal is not remembered: once the interval has passed the name is obtained.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(node.handshake("three.test").await);
    assert_eq!(node.issued(), 3);

    // Concurrent handshakes for one name take one slot and issue once.
    let many: Vec<bool> =
        futures::future::join_all((0..50).map(|_| node.handshake("four.test"))).await;
    assert!(many.iter().all(|served| *served));
    assert_eq!(node.issued(), 4);
}
