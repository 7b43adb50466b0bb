//! Pebble and pebble-challtestsrv started as child processes on free ports, with Pebble's
//! listener certificate made by `openssl`, and what the tests read from them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cert_core::challenge::ChallTestSrvDns;
use cert_core::rustls::RootCertStore;
use cert_core::rustls::pki_types::ServerName;

use super::connector;

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
