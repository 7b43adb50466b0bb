//! ACME issuance end to end against Pebble (the Debian `pebble` package), with real
//! validation: HTTP-01, TLS-ALPN-01 and DNS-01 (wildcard) answered by the engine, a
//! three-node cluster, on-demand TLS and a CA outage. Each test starts its own Pebble and
//! pebble-challtestsrv on free ports. Needs `CERTSTORE_TEST_PEBBLE` (the pebble binary).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cert_core::challenge::{
    ACME_TLS_ALPN, ChallTestSrvDns, ChallengeType, Challenges, Http01Handler,
};
use cert_core::rustls::pki_types::ServerName;
use cert_core::rustls::{self, RootCertStore};
use cert_core::tokio_rustls::TlsConnector;
use cert_core::{
    AcmeConfig, AcmeIssuer, Cache, CertManager, Event, Issuer, KeyInfo, Lease, LockOptions, Locker,
    ManagerConfig, MemoryStorage, OnDemandConfig, RetryPolicy, Storage, Store, async_trait,
    server_config,
};
use tokio::net::TcpListener;

/// A port free right now and never handed out before in this process (tests run in
/// parallel, and Pebble binds its ports a moment after they are chosen).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Pebble and pebble-challtestsrv as child processes, killed on drop.
struct Pebble {
    bin: String,
    dir: tempfile::TempDir,
    pebble: Option<Child>,
    chall: Option<Child>,
    port: u16,
    mgmt: u16,
    dns: u16,
    chall_mgmt: u16,
    http_port: u16,
    tls_port: u16,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [self.pebble.as_mut(), self.chall.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run(cmd: &mut Command) {
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{cmd:?}");
}

impl Pebble {
    async fn start() -> Option<Pebble> {
        let bin = integration_tests::service_url("CERTSTORE_TEST_PEBBLE")?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        // A CA and a localhost certificate for Pebble's own HTTPS listener.
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .args([
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                "/CN=pebble listener ca",
            ])
            .current_dir(d));
        run(Command::new("openssl")
            .args(["req"])
            .args(ec)
            .args([
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=localhost",
            ])
            .current_dir(d));
        std::fs::write(d.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
        run(Command::new("openssl")
            .args([
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "cert.pem",
                "-days",
                "30",
                "-extfile",
                "ext.cnf",
            ])
            .current_dir(d));
        let mut pebble = Pebble {
            bin,
            dir,
            pebble: None,
            chall: None,
            port: free_port(),
            mgmt: free_port(),
            dns: free_port(),
            chall_mgmt: free_port(),
            http_port: free_port(),
            tls_port: free_port(),
        };
        let config = format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{}", "managementListenAddress": "127.0.0.1:{}", "certificate": "{}", "privateKey": "{}", "httpPort": {}, "tlsPort": {}, "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}"#,
            pebble.port,
            pebble.mgmt,
            d.join("cert.pem").display(),
            d.join("key.pem").display(),
            pebble.http_port,
            pebble.tls_port,
        );
        std::fs::write(d.join("pebble.json"), config).unwrap();
        let chall = Command::new("pebble-challtestsrv")
            .args([
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-defaultIPv6",
                "",
            ])
            .args(["-dns01", &format!("127.0.0.1:{}", pebble.dns)])
            .args(["-management", &format!("127.0.0.1:{}", pebble.chall_mgmt)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        pebble.chall = Some(chall);
        pebble.start_ca().await;
        Some(pebble)
    }

    async fn start_ca(&mut self) {
        let child = Command::new(&self.bin)
            .args([
                "-config",
                self.dir.path().join("pebble.json").to_str().unwrap(),
            ])
            .args([
                "-strict=false",
                "-dnsserver",
                &format!("127.0.0.1:{}", self.dns),
            ])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.pebble = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.mgmt))
                .await
                .is_ok()
                && tokio::net::TcpStream::connect(("127.0.0.1", self.chall_mgmt))
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pebble did not start");
    }

    fn stop_ca(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    fn listener_root(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The current issuing root (it changes at every start).
    fn listener_roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        let pem = std::fs::read_to_string(self.listener_root()).unwrap();
        for cert in cert_core::certificate::parse_chain(&pem).unwrap() {
            roots.add(cert).unwrap();
        }
        roots
    }

    /// GET `path` over HTTPS from Pebble's `port` (listener or management): the body.
    async fn get(&self, port: u16, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut tls = connector(self.listener_roots())
            .connect(ServerName::try_from("localhost").unwrap(), stream)
            .await
            .unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let body = text.split_once("\r\n\r\n").unwrap().1;
        body.to_owned()
    }

    /// The current issuing root (it changes at every start).
    async fn issuing_root(&self) -> RootCertStore {
        let text = self.get(self.mgmt, "/roots/0").await;
        let start = text.find("-----BEGIN CERTIFICATE-----").unwrap();
        let mut roots = RootCertStore::empty();
        for cert in cert_core::certificate::parse_chain(&text[start..]).unwrap() {
            roots.add(cert).unwrap();
        }
        roots
    }

    fn dns(&self) -> Arc<ChallTestSrvDns> {
        Arc::new(ChallTestSrvDns::new(format!(
            "http://127.0.0.1:{}",
            self.chall_mgmt
        )))
    }
}

fn connector(roots: RootCertStore) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

fn acme_config(pebble: &Pebble, types: &[ChallengeType]) -> AcmeConfig {
    AcmeConfig::new(pebble.directory())
        .with_email("ops@example.com")
        .agree_to_terms()
        .with_root_pem_file(pebble.listener_root())
        .with_challenge_types(types.iter().copied())
        .with_order_timeout(Duration::from_secs(30))
        .with_retries(2, Duration::from_millis(200))
}

fn manager_config() -> ManagerConfig {
    ManagerConfig::default()
        .with_retry(RetryPolicy::new(
            Duration::from_millis(200),
            Duration::from_millis(800),
        ))
        .with_lock(LockOptions::default().with_ttl(Duration::from_secs(30)))
}

/// One node: engine, challenge data, and its servers.
struct Node {
    manager: CertManager,
    challenges: Arc<Challenges>,
    issuer: Arc<AcmeIssuer>,
}

fn node(storage: &Arc<dyn Store>, pebble: &Pebble, types: &[ChallengeType]) -> Node {
    let challenges = Challenges::new(Arc::clone(storage));
    let issuer = Arc::new(
        AcmeIssuer::new(
            Arc::clone(storage),
            Arc::clone(&challenges),
            acme_config(pebble, types),
        )
        .with_dns_provider(pebble.dns()),
    );
    let manager = CertManager::new(
        Arc::clone(storage),
        Arc::new(Cache::new(1000)),
        vec![Arc::clone(&issuer) as Arc<dyn Issuer>],
        manager_config(),
    );
    Node {
        manager,
        challenges,
        issuer,
    }
}

/// Serves TLS for `managers` (round robin per connection) on `listener`, with TLS-ALPN-01
/// answered from storage and on-demand certificates.
fn serve_tls(
    listener: TcpListener,
    nodes: Vec<(CertManager, Arc<Challenges>)>,
) -> tokio::task::JoinHandle<()> {
    let configs: Vec<_> = nodes
        .iter()
        .map(|(manager, challenges)| {
            let resolver = manager.resolver().with_challenges(Arc::clone(challenges));
            let mut config = server_config(Arc::new(resolver)).unwrap();
            config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
            Arc::new(config)
        })
        .collect();
    let counter = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let i = counter.fetch_add(1, Ordering::SeqCst) % nodes.len();
            let (manager, challenges) = nodes[i].clone();
            let config = Arc::clone(&configs[i]);
            tokio::spawn(async move {
                let accepted = cert_core::accept_lazy_hello(stream, config, |hello| async move {
                    if hello.is_acme_tls_alpn() {
                        if let Some(name) = &hello.server_name {
                            challenges.prepare_tls_alpn01(name).await;
                        }
                    } else {
                        manager.prepare_handshake(hello.server_name).await;
                    }
                })
                .await;
                if let Ok(mut tls) = accepted {
                    use tokio::io::AsyncWriteExt;
                    let _ = tls.write_all(b"hello").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    })
}

/// Serves HTTP-01 for `nodes` round robin on `listener`.
fn serve_http(listener: TcpListener, nodes: Vec<Arc<Challenges>>) -> tokio::task::JoinHandle<()> {
    let hits = Arc::new(AtomicUsize::new(0));
    let listeners: Vec<_> = nodes
        .iter()
        .map(|challenges| {
            let handler = Http01Handler::new(Arc::clone(challenges));
            let inner = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            inner.set_nonblocking(true).unwrap();
            let addr = inner.local_addr().unwrap();
            handler.serve(TcpListener::from_std(inner).unwrap());
            addr
        })
        .collect();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let addr = listeners[hits.fetch_add(1, Ordering::SeqCst) % listeners.len()];
            tokio::spawn(async move {
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(addr).await {
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
                }
            });
        }
    })
}

async fn bind(port: u16) -> TcpListener {
    TcpListener::bind(("127.0.0.1", port)).await.unwrap()
}

/// Connects to `port` with SNI `name`, trusting `roots`; returns the first bytes.
async fn handshake(port: u16, name: &str, roots: RootCertStore) -> Result<String, String> {
    use tokio::io::AsyncReadExt;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = connector(roots)
        .connect(ServerName::try_from(name.to_owned()).unwrap(), stream)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn count_obtained(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> usize {
    let mut n = 0;
    while let Ok(event) = rx.try_recv() {
        if matches!(event, Event::Obtained { .. } | Event::Renewed { .. }) {
            n += 1;
        }
    }
    n
}

async fn single_type(ty: ChallengeType, name: &str) {
    let Some(pebble) = Pebble::start().await else {
        return;
    };
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let n = node(&storage, &pebble, &[ty]);
    let _http = serve_http(
        bind(pebble.http_port).await,
        vec![Arc::clone(&n.challenges)],
    );
    let _tls = serve_tls(
        bind(pebble.tls_port).await,
        vec![(n.manager.clone(), Arc::clone(&n.challenges))],
    );
    n.manager.manage([name]).await.unwrap();
    let roots = pebble.issuing_root().await;
    let probe = if let Some(base) = name.strip_prefix("*.") {
        format!("www.{base}")
    } else {
        name.to_owned()
    };
    assert_eq!(
        handshake(pebble.tls_port, &probe, roots).await.unwrap(),
        "hello"
    );
    // Challenge data is gone from storage afterwards.
    assert!(
        storage
            .list("challenges", true)
            .await
            .map(|l| l.is_empty())
            .unwrap_or(true)
    );
    // The account was stored once.
    assert_eq!(storage.list("acme", true).await.unwrap().len(), 1);
    // Revocation of the managed certificate; revoking it twice is refused for good.
    n.issuer.revoke_managed(name, Some(4)).await.unwrap();
    let again = n.issuer.revoke_managed(name, Some(4)).await.unwrap_err();
    assert!(!again.is_retryable(), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_certificate() {
    single_type(ChallengeType::Http01, "http01.example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_certificate() {
    single_type(ChallengeType::TlsAlpn01, "alpn.example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns01_wildcard_certificate() {
    single_type(ChallengeType::Dns01, "*.wild.example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_of_three_orders_each_name_once() {
    let Some(pebble) = Pebble::start().await else {
        return;
    };
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let nodes: Vec<Node> = (0..3)
        .map(|_| node(&storage, &pebble, &[ChallengeType::Http01]))
        .collect();
    // The load balancer sends each validation to the next node: mostly not the one that
    // placed the order.
    let _http = serve_http(
        bind(pebble.http_port).await,
        nodes.iter().map(|n| Arc::clone(&n.challenges)).collect(),
    );
    let _tls = serve_tls(
        bind(pebble.tls_port).await,
        nodes
            .iter()
            .map(|n| (n.manager.clone(), Arc::clone(&n.challenges)))
            .collect(),
    );
    let mut receivers: Vec<_> = nodes.iter().map(|n| n.manager.subscribe()).collect();
    let names: Vec<String> = (0..30)
        .map(|i| format!("n{i}.cluster.example.com"))
        .collect();
    let results =
        futures::future::join_all(nodes.iter().map(|n| n.manager.manage(names.clone()))).await;
    for result in results {
        result.unwrap();
    }
    let orders: usize = receivers.iter_mut().map(count_obtained).sum();
    assert_eq!(orders, 30, "exactly one order per name");
    let roots = pebble.issuing_root().await;
    for name in &names {
        for node in &nodes {
            assert!(node.manager.cache().get(name).is_some(), "{name}");
        }
        for _ in 0..3 {
            assert_eq!(
                handshake(pebble.tls_port, name, roots.clone())
                    .await
                    .unwrap(),
                "hello"
            );
        }
    }
}

/// Counts storage reads.
#[derive(Debug)]
struct CountingStore {
    inner: MemoryStorage,
    reads: AtomicUsize,
}

#[async_trait]
impl Storage for CountingStore {
    async fn store(&self, key: &str, value: &[u8]) -> cert_core::Result<()> {
        self.inner.store(key, value).await
    }
    async fn load(&self, key: &str) -> cert_core::Result<Vec<u8>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(key).await
    }
    async fn delete(&self, key: &str) -> cert_core::Result<()> {
        self.inner.delete(key).await
    }
    async fn exists(&self, key: &str) -> cert_core::Result<bool> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.exists(key).await
    }
    async fn list(&self, prefix: &str, recursive: bool) -> cert_core::Result<Vec<String>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix, recursive).await
    }
    async fn stat(&self, key: &str) -> cert_core::Result<KeyInfo> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.stat(key).await
    }
}

#[async_trait]
impl Locker for CountingStore {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> cert_core::Result<Option<Lease>> {
        self.inner.try_acquire(name, ttl).await
    }
    async fn refresh(&self, lease: &Lease, ttl: Duration) -> cert_core::Result<Lease> {
        self.inner.refresh(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> cert_core::Result<()> {
        self.inner.release(lease).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_storm() {
    let Some(pebble) = Pebble::start().await else {
        return;
    };
    let counting = Arc::new(CountingStore {
        inner: MemoryStorage::new(),
        reads: AtomicUsize::new(0),
    });
    let storage: Arc<dyn Store> = counting.clone();
    let n = node(&storage, &pebble, &[ChallengeType::Http01]);
    n.manager.enable_on_demand(
        OnDemandConfig::default()
            .with_decision(|name: String| async move { name.ends_with(".allowed.example.com") })
            .with_rate_limit(5, Duration::from_secs(60))
            .with_handshake_timeout(Duration::from_secs(60)),
    );
    let _http = serve_http(
        bind(pebble.http_port).await,
        vec![Arc::clone(&n.challenges)],
    );
    let _tls = serve_tls(
        bind(pebble.tls_port).await,
        vec![(n.manager.clone(), Arc::clone(&n.challenges))],
    );
    let mut rx = n.manager.subscribe();
    let roots = pebble.issuing_root().await;

    let storm = |name: &'static str| {
        let roots = roots.clone();
        futures::future::join_all(
            (0..500).map(move |_| handshake(pebble.tls_port, name, roots.clone())),
        )
    };
    let denied = storm("x.denied.example.com").await;
    assert!(denied.iter().all(Result::is_err));
    assert_eq!(
        counting.reads.load(Ordering::SeqCst),
        0,
        "a denied name reads nothing"
    );
    assert_eq!(count_obtained(&mut rx), 0);

    let allowed = storm("www.allowed.example.com").await;
    let failures: Vec<_> = allowed
        .iter()
        .filter(|r| r.as_deref() != Ok("hello"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(count_obtained(&mut rx), 1, "one order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_outage_keeps_serving_and_recovers() {
    let Some(mut pebble) = Pebble::start().await else {
        return;
    };
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let first = node(&storage, &pebble, &[ChallengeType::Http01]);
    let _http = serve_http(
        bind(pebble.http_port).await,
        vec![Arc::clone(&first.challenges)],
    );
    let name = "outage.example.com";
    first.manager.manage([name]).await.unwrap();
    let old_roots = pebble.issuing_root().await;

    // A second engine that renews at once (every certificate is due for it).
    let challenges = Challenges::new(Arc::clone(&storage));
    let issuer = Arc::new(AcmeIssuer::new(
        Arc::clone(&storage),
        Arc::clone(&challenges),
        acme_config(&pebble, &[ChallengeType::Http01]),
    ));
    let mut config = manager_config();
    config.renew_ratio = 1.0;
    let renewer = CertManager::new(
        Arc::clone(&storage),
        Arc::new(Cache::new(100)),
        vec![issuer],
        config,
    );
    let _tls = serve_tls(
        bind(pebble.tls_port).await,
        vec![(renewer.clone(), challenges)],
    );
    let mut rx = renewer.subscribe();

    pebble.stop_ca();
    // Loaded and due; renewal fails, the old certificate is served.
    renewer.manage([name]).await.unwrap();
    assert_eq!(
        handshake(pebble.tls_port, name, old_roots.clone())
            .await
            .unwrap(),
        "hello"
    );
    let mut backoff = None;
    while let Ok(event) = rx.try_recv() {
        if let Event::Failed {
            retry_in: Some(retry),
            ..
        } = event
        {
            backoff = Some(retry);
        }
    }
    assert!(backoff.is_some(), "the engine backs off");
    // Within the backoff nothing is attempted.
    renewer.renew_due().await;
    assert_eq!(count_obtained(&mut rx), 0);

    pebble.start_ca().await;
    let new_roots = pebble.issuing_root().await;
    let mut renewed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        renewer.renew_due().await;
        if count_obtained(&mut rx) > 0 {
            renewed = true;
            break;
        }
    }
    assert!(renewed, "renewed after the CA returned");
    assert_eq!(
        handshake(pebble.tls_port, name, new_roots).await.unwrap(),
        "hello"
    );
}

/// RFC 3339 for a unix time (UTC).
fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A small HTTPS endpoint in front of Pebble (which has no renewal information): its
/// directory is Pebble's plus `renewalInfo` pointing here, and it answers renewal-info
/// requests with a fixed window, counting them per certificate. It is addressed as
/// `localhost` (Pebble as `127.0.0.1`): TLS clients keep resumption tickets per server
/// name, not per port, and offering Pebble's ticket here would confuse the handshake.
struct AriServer {
    port: u16,
    hits: Arc<ari_hits::Hits>,
    _task: tokio::task::JoinHandle<()>,
}

mod ari_hits {
    /// Renewal-info requests seen, by certificate identifier, and the payloads of the
    /// new-order requests intercepted.
    #[derive(Default)]
    pub struct Hits(
        pub std::sync::Mutex<Vec<String>>,
        pub std::sync::Mutex<Vec<serde_json::Value>>,
    );
}

/// The JSON payload of a flattened JWS request body.
fn jws_payload(body: &[u8]) -> serde_json::Value {
    use base64::Engine;
    let jws: serde_json::Value = serde_json::from_slice(body).unwrap();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jws["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

impl AriServer {
    async fn start(pebble: &Pebble, window: (i64, i64)) -> AriServer {
        AriServer::start_with(pebble, window, false).await
    }

    /// With `intercept_orders`, the directory sends new orders here: their payloads are
    /// recorded and refused with a `malformed` problem.
    async fn start_with(pebble: &Pebble, window: (i64, i64), intercept_orders: bool) -> AriServer {
        let listener = bind(free_port()).await;
        let port = listener.local_addr().unwrap().port();
        let mut directory: serde_json::Value =
            serde_json::from_str(&pebble.get(pebble.port, "/dir").await).unwrap();
        directory["renewalInfo"] = format!("https://localhost:{port}/renewal-info").into();
        if intercept_orders {
            directory["newOrder"] = format!("https://localhost:{port}/new-order").into();
        }
        let directory = directory.to_string();
        let info = format!(
            "{{\"suggestedWindow\": {{\"start\": \"{}\", \"end\": \"{}\"}}}}",
            rfc3339(window.0),
            rfc3339(window.1)
        );
        let dir = pebble.dir.path();
        let chain = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
        let key = std::fs::read_to_string(dir.join("key.pem")).unwrap();
        let cache = Arc::new(Cache::new(10));
        cache.insert(
            "localhost",
            cert_core::certificate::certified_key_from_pem(&chain, &key).unwrap(),
        );
        let resolver = cert_core::CertResolver::new(cache).with_default("localhost");
        let mut config = server_config(Arc::new(resolver)).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = cert_core::tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let hits = Arc::new(ari_hits::Hits::default());
        let seen = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let (directory, info, seen) = (directory.clone(), info.clone(), Arc::clone(&seen));
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 2048];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length").then_some(value)
                        })
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + length {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let (status, extra, body) = if path == "/dir" {
                        ("200 OK", String::new(), directory)
                    } else if let Some(id) = path.strip_prefix("/renewal-info/") {
                        seen.0.lock().unwrap().push(id.to_owned());
                        ("200 OK", "Retry-After: 3600\r\n".to_owned(), info)
                    } else if path == "/new-order" {
                        seen.1
                            .lock()
                            .unwrap()
                            .push(jws_payload(&buf[end..end + length]));
                        (
                            "400 Bad Request",
                            String::new(),
                            r#"{"type": "urn:ietf:params:acme:error:malformed", "detail": "refused by the test"}"#.to_owned(),
                        )
                    } else {
                        ("404 Not Found", String::new(), String::new())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        AriServer {
            port,
            hits,
            _task: task,
        }
    }

    fn hits(&self) -> Vec<String> {
        self.hits.0.lock().unwrap().clone()
    }

    fn orders(&self) -> Vec<serde_json::Value> {
        self.hits.1.lock().unwrap().clone()
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn rfc3339_dates() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
}

/// The CA's suggested window (ARI) sets the renewal moment, is fetched by one node and
/// shared through storage, and makes a certificate due that its lifetime says is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_info_window_drives_renewal() {
    let Some(pebble) = Pebble::start().await else {
        return;
    };
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());

    // First a window in the future: the renewal moment lands inside it.
    let now = now_unix();
    let future = (now + 10_000, now + 20_000);
    let ari = AriServer::start(&pebble, future).await;
    let make = |storage: &Arc<dyn Store>| {
        let challenges = Challenges::new(Arc::clone(storage));
        let mut config = acme_config(&pebble, &[ChallengeType::Http01]);
        config.directory_url = format!("https://localhost:{}/dir", ari.port);
        let issuer = Arc::new(AcmeIssuer::new(
            Arc::clone(storage),
            Arc::clone(&challenges),
            config,
        ));
        let manager = CertManager::new(
            Arc::clone(storage),
            Arc::new(Cache::new(100)),
            vec![issuer as Arc<dyn Issuer>],
            manager_config(),
        );
        (manager, challenges)
    };
    let (a, a_challenges) = make(&storage);
    let _http = serve_http(bind(pebble.http_port).await, vec![a_challenges]);
    let name = "ari.example.com";
    a.manage([name]).await.unwrap();
    let moment = a.renewal_moment(name).unwrap();

    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    };
    assert!(
        (future.0..=future.1).contains(&unix(moment)),
        "{moment:?} {:?}",
        ari.hits()
    );
    assert_eq!(ari.hits().len(), 1);

    // A second node loads the certificate and uses the stored window: no second fetch.
    let (b, _) = make(&storage);
    let mut rx = b.subscribe();
    b.manage([name]).await.unwrap();
    assert!((future.0..=future.1).contains(&unix(b.renewal_moment(name).unwrap())));
    assert_eq!(ari.hits().len(), 1, "the window is shared through storage");
    assert_eq!(count_obtained(&mut rx), 0, "not due yet");

    // A window that has started (for example after a mass revocation) makes the
    // certificate due at once, long before its lifetime would. (Another directory URL,
    // so another issuer area of the same storage; the HTTP-01 server answers from it.)
    let past = (now - 120, now - 60);
    let ari2 = AriServer::start(&pebble, past).await;
    let make2 = |storage: &Arc<dyn Store>| {
        let challenges = Challenges::new(Arc::clone(storage));
        let mut config = acme_config(&pebble, &[ChallengeType::Http01]);
        config.directory_url = format!("https://localhost:{}/dir", ari2.port);
        let issuer = Arc::new(AcmeIssuer::new(
            Arc::clone(storage),
            Arc::clone(&challenges),
            config,
        ));
        let manager = CertManager::new(
            Arc::clone(storage),
            Arc::new(Cache::new(100)),
            vec![issuer as Arc<dyn Issuer>],
            manager_config(),
        );
        (manager, challenges)
    };
    let (c, _) = make2(&storage);
    let mut rx = c.subscribe();
    c.manage([name]).await.unwrap();
    assert_eq!(count_obtained(&mut rx), 1);
    let first = c.certificate_meta(name).unwrap();
    c.renew_due().await;
    let events: Vec<Event> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert!(
        events.iter().any(|e| matches!(e, Event::Renewed { .. })),
        "{events:?}"
    );
    assert_ne!(c.certificate_meta(name).unwrap().serial, first.serial);
}

/// A renewal order names the certificate it replaces (RFC 9773 `replaces`, the same
/// identifier the renewal-info request used); a CA that refuses it gets the order again
/// without it, and the old certificate stays in service when the renewal fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_orders_name_the_certificate_they_replace() {
    let Some(pebble) = Pebble::start().await else {
        return;
    };
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let name = "replaces.example.com";
    let first = node(&storage, &pebble, &[ChallengeType::Http01]);
    let _http = serve_http(
        bind(pebble.http_port).await,
        vec![Arc::clone(&first.challenges)],
    );
    first.manager.manage([name]).await.unwrap();
    let served = first.manager.certificate_meta(name).unwrap();

    // A directory whose renewal window has started and whose new orders are intercepted;
    // the certificate is moved into that directory's area so it is renewed, not obtained.
    let now = now_unix();
    let ari = AriServer::start_with(&pebble, (now - 120, now - 60), true).await;
    let mut config = acme_config(&pebble, &[ChallengeType::Http01]);
    config.directory_url = format!("https://localhost:{}/dir", ari.port);
    let from = cert_core::record::CertificateId::new(&first.issuer.id(), name);
    let mut moved = cert_core::record::load_certificate(storage.as_ref(), &from)
        .await
        .unwrap()
        .and_then(cert_core::record::RecordState::valid)
        .unwrap()
        .stored;
    moved.meta.issuer = config.directory_url.clone();
    cert_core::record::save_certificate(storage.as_ref(), name, &moved, None)
        .await
        .unwrap();
    let challenges = Challenges::new(Arc::clone(&storage));
    let issuer = Arc::new(AcmeIssuer::new(Arc::clone(&storage), challenges, config));
    let second = CertManager::new(
        Arc::clone(&storage),
        Arc::new(Cache::new(10)),
        vec![issuer as Arc<dyn Issuer>],
        manager_config(),
    );
    second.manage([name]).await.unwrap();
    second.renew_due().await;

    let hits = ari.hits();
    assert!(!hits.is_empty(), "renewal info was fetched");
    let orders = ari.orders();
    assert!(orders.len() >= 2, "{orders:?}");
    assert_eq!(
        orders[0]["replaces"].as_str(),
        Some(hits[0].as_str()),
        "the renewal order names the certificate it replaces: {orders:?}"
    );
    assert_eq!(orders[0]["identifiers"][0]["value"], name);
    assert!(
        orders[1].get("replaces").is_none(),
        "the retry orders plainly: {orders:?}"
    );
    assert_eq!(second.certificate_meta(name).unwrap().serial, served.serial);
    assert!(
        second.cache().get(name).is_some(),
        "the old certificate is still served"
    );
}
