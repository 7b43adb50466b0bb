//! What the `certstore` command's tests share: the built binary run with a clean
//! environment and what it printed, test keys and self-signed certificates, imports, and
//! `certstore serve` as a child process with a TLS client for it.
//!
//! Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cert_core::rustls::pki_types::ServerName;
use cert_core::rustls::{self, RootCertStore};
use cert_core::tokio_rustls::TlsConnector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fixed test key (base64 of 32 bytes).
pub const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// A second fixed test key (base64 of 32 bytes).
pub const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// What one run of the command printed, and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// A failure with `code`, reported as exactly one `error:` line.
    pub fn fails(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {:?}", self.stderr);
        assert!(lines[0].starts_with("error: "), "{}", self.stderr);
        self
    }

    /// A failure with `code`, one `error:` line on stderr that contains `text`.
    pub fn fails_with(self, code: i32, text: &str) -> Self {
        let run = self.fails(code);
        assert!(run.stderr.contains(text), "{text:?} in {}", run.stderr);
        run
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| panic!("{err}: {}", self.stdout))
    }
}

/// The built `certstore` with `env` set and nothing else from the environment that would
/// change what it does: no storage, key or log level of the caller's, and the S3 test
/// server's credentials. Standard input is empty, so nothing waits for an answer.
pub fn command(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_certstore"));
    for var in [
        "CERTSTORE_STORAGE",
        "CERTSTORE_KEY",
        "CERTSTORE_PREVIOUS_KEYS",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_ACCESS_KEY_ID", "certstore")
        .env("AWS_SECRET_ACCESS_KEY", "certstore-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null());
    cmd
}

pub fn run_env(env: &[(&str, &str)], args: &[&str]) -> Run {
    command(env).args(args).output().unwrap().into()
}

pub fn run(args: &[&str]) -> Run {
    run_env(&[], args)
}

pub fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A self-signed certificate for `names`, valid from 2024 to 2099 unless `shape` changes
/// it: (chain PEM, key PEM).
pub fn self_signed_with(
    names: &[&str],
    shape: impl FnOnce(&mut rcgen::CertificateParams),
) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    shape(&mut params);
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

pub fn self_signed(names: &[&str]) -> (String, String) {
    self_signed_with(names, |_| {})
}

/// [`self_signed_with`] written as `<dir>/<file>.crt` and `.key`.
pub fn make_cert_with(
    dir: &Path,
    file: &str,
    names: &[&str],
    shape: impl FnOnce(&mut rcgen::CertificateParams),
) -> (PathBuf, PathBuf) {
    let (chain, key) = self_signed_with(names, shape);
    let crt = dir.join(format!("{file}.crt"));
    let pem_key = dir.join(format!("{file}.key"));
    std::fs::write(&crt, chain).unwrap();
    std::fs::write(&pem_key, key).unwrap();
    (crt, pem_key)
}

pub fn make_cert(dir: &Path, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    make_cert_with(dir, file, names, |_| {})
}

/// A self-signed certificate for `names`, valid from `from` to `until` (years, 1 January),
/// written as `<dir>/<first name>.crt` and `.key` (`*` written `_`).
pub fn make_dated_cert(
    dir: &Path,
    names: &[&str],
    (from, until): (i32, i32),
) -> (PathBuf, PathBuf) {
    make_cert_with(dir, &names[0].replace('*', "_"), names, |params| {
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
    })
}

/// `certstore import` of `cert` and `key` into `storage`, which must succeed.
pub fn import(storage: &str, env: &[(&str, &str)], cert: &Path, key: &Path) {
    run_env(
        env,
        &[
            "import",
            "--storage",
            storage,
            "--cert",
            &path(cert),
            "--key",
            &path(key),
        ],
    )
    .ok();
}

/// A running `certstore serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// The metrics endpoint's address, when `--metrics` was given.
    pub metrics: Option<std::net::SocketAddr>,
    /// Where the server wrote the internal CA's root certificate.
    pub root: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `certstore serve` on a free port for `domains` (none: its default,
/// `localhost`) and waits until it says it is ready.
pub fn serve(storage: &str, domains: &[&str]) -> Server {
    serve_with(storage, domains, &[])
}

/// [`serve`] with more arguments.
pub fn serve_with(storage: &str, domains: &[&str], extra: &[&str]) -> Server {
    let mut cmd = command(&[]);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--storage", storage]);
    for domain in domains {
        cmd.args(["--domain", domain]);
    }
    cmd.args(extra);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (mut port, mut root, mut metrics) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(addr) = line.strip_prefix("listening on ") {
            port = Some(addr.rsplit(':').next().unwrap().parse().unwrap());
        }
        if let Some(url) = line.strip_prefix("metrics: http://") {
            metrics = Some(url.trim_end_matches("/metrics").parse().unwrap());
        }
        if let Some(path) = line.strip_prefix("root CA certificate: ") {
            root = Some(path.to_owned());
        }
        if line.starts_with("try: ") || Instant::now() > deadline {
            break;
        }
    }
    Server {
        child,
        port: port.expect("the server printed its address"),
        metrics,
        root: root.expect("the server printed the root path"),
    }
}

/// A TLS client configuration trusting only `root_pem`.
pub fn client_config(root_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in cert_core::certificate::parse_chain(root_pem).unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(client)
}

/// Fetches `/` over TLS for `name`, trusting only `root_pem`: the page and the leaf DER.
pub async fn fetch(port: u16, name: &str, root_pem: &str) -> (String, Vec<u8>) {
    let client = client_config(root_pem);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = TlsConnector::from(client)
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(format!("GET / HTTP/1.1\r\nhost: {name}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (String::from_utf8(response).unwrap(), leaf)
}

/// `GET path` from the HTTP server at `addr`, with hyper's client: the status and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The value of the series `name` whose labels include every pair of `labels`, summed
/// over the series that match, in a Prometheus text exposition; `None` when none does.
pub fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let matches = labels.iter().all(|(k, v)| {
            series_labels
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        });
        if matches {
            *total.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    total
}
