//! The ACME test harness: Pebble and pebble-challtestsrv started per test on free ports,
//! engine nodes sharing one storage, and the HTTP-01 and TLS front ends that answer
//! Pebble's validations round robin across the nodes.
#![allow(dead_code)]

pub mod metrics;
mod recorder;

#[allow(unused_imports)]
pub use recorder::Recorder;

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
    AcmeConfig, AcmeIssuer, Cache, CertManager, Event, Issuer, LockOptions, ManagerConfig,
    RetryPolicy, Store, server_config,
};
use tokio::net::TcpListener;

/// A port free right now and never handed out before in this process (tests run in
/// parallel, and Pebble binds its ports a moment after they are chosen).
pub fn free_port() -> u16 {
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
pub struct Pebble {
    pub bin: String,
    pub dir: tempfile::TempDir,
    pub pebble: Option<Child>,
    pub chall: Option<Child>,
    pub port: u16,
    pub mgmt: u16,
    pub dns: u16,
    pub chall_mgmt: u16,
    pub http_port: u16,
    pub tls_port: u16,
    /// Settings given to Pebble through its environment, beside its defaults.
    pub env: Vec<(String, String)>,
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

pub fn run(cmd: &mut Command) {
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{cmd:?}");
}

impl Pebble {
    /// Pebble with its default settings: 5% of nonces rejected, validation delayed by up
    /// to 5 s, authorizations reused half of the time, as it tests ACME clients.
    pub async fn start() -> Option<Pebble> {
        Self::start_with(&[]).await
    }

    /// Pebble with these environment settings (`PEBBLE_WFE_NONCEREJECT`, ...).
    pub async fn start_with(env: &[(&str, &str)]) -> Option<Pebble> {
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
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
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

    pub async fn start_ca(&mut self) {
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
            .envs(self.env.iter().map(|(k, v)| (k, v)))
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

    pub fn stop_ca(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    pub fn listener_root(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The current issuing root (it changes at every start).
    pub fn listener_roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        let pem = std::fs::read_to_string(self.listener_root()).unwrap();
        for cert in cert_core::certificate::parse_chain(&pem).unwrap() {
            roots.add(cert).unwrap();
        }
        roots
    }

    /// GET `path` over HTTPS from Pebble's `port` (listener or management): the body.
    pub async fn get(&self, port: u16, path: &str) -> String {
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
    pub async fn issuing_root(&self) -> RootCertStore {
        let text = self.get(self.mgmt, "/roots/0").await;
        let start = text.find("-----BEGIN CERTIFICATE-----").unwrap();
        let mut roots = RootCertStore::empty();
        for cert in cert_core::certificate::parse_chain(&text[start..]).unwrap() {
            roots.add(cert).unwrap();
        }
        roots
    }

    pub fn dns(&self) -> Arc<ChallTestSrvDns> {
        Arc::new(ChallTestSrvDns::new(format!(
            "http://127.0.0.1:{}",
            self.chall_mgmt
        )))
    }
}

pub fn connector(roots: RootCertStore) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

pub fn acme_config(pebble: &Pebble, types: &[ChallengeType]) -> AcmeConfig {
    AcmeConfig::new(pebble.directory())
        .with_email("ops@example.com")
        .agree_to_terms()
        .with_root_pem_file(pebble.listener_root())
        .with_challenge_types(types.iter().copied())
        .with_order_timeout(Duration::from_secs(30))
        .with_retries(2, Duration::from_millis(200))
}

pub fn manager_config() -> ManagerConfig {
    ManagerConfig::default()
        .with_retry(RetryPolicy::new(
            Duration::from_millis(200),
            Duration::from_millis(800),
        ))
        .with_lock(LockOptions::default().with_ttl(Duration::from_secs(30)))
}

/// One node: engine, challenge data, and its servers.
pub struct Node {
    pub manager: CertManager,
    pub challenges: Arc<Challenges>,
    pub issuer: Arc<AcmeIssuer>,
}

pub fn node(storage: &Arc<dyn Store>, pebble: &Pebble, types: &[ChallengeType]) -> Node {
    node_with(storage, pebble, acme_config(pebble, types))
}

/// One node whose ACME issuer has `config` (DNS-01 through Pebble's test DNS server).
pub fn node_with(storage: &Arc<dyn Store>, pebble: &Pebble, config: AcmeConfig) -> Node {
    let challenges = Challenges::new(Arc::clone(storage));
    let issuer = Arc::new(
        AcmeIssuer::new(Arc::clone(storage), Arc::clone(&challenges), config)
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
pub fn serve_tls(
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
pub fn serve_http(
    listener: TcpListener,
    nodes: Vec<Arc<Challenges>>,
) -> tokio::task::JoinHandle<()> {
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

pub async fn bind(port: u16) -> TcpListener {
    TcpListener::bind(("127.0.0.1", port)).await.unwrap()
}

/// Connects to `port` with SNI `name`, trusting `roots`; returns the first bytes.
pub async fn handshake(port: u16, name: &str, roots: RootCertStore) -> Result<String, String> {
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

pub fn count_obtained(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> usize {
    let mut n = 0;
    while let Ok(event) = rx.try_recv() {
        if matches!(event, Event::Obtained { .. } | Event::Renewed { .. }) {
            n += 1;
        }
    }
    n
}
