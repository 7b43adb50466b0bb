//! Crash drills: `certstore import` and the renewals inside `certstore serve`, killed with
//! SIGKILL at random moments while every write is slowed
//! (`CERTSTORE_DRILL_WRITE_DELAY_MS`) so the kills land inside the saves. After every kill
//! the certificate record is the old one or the new one: a fresh `serve` serves the name,
//! and `export` writes a key and a chain that belong together.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cert_core::record::{self, CertificateId, RecordState};
use cert_core::rustls;
use cert_file::FileStorage;
use common::{command, make_cert};

const NAME: &str = "drill.example";

/// A small deterministic generator, seeded from the clock and printed, so a failing
/// sequence of kill moments can be replayed by setting `CERTSTORE_DRILL_SEED`.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("CERTSTORE_DRILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("drill seed: {seed}");
        Rng(seed)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

fn self_signed(dir: &Path, tag: &str) -> (PathBuf, PathBuf, String) {
    let (crt, key) = make_cert(dir, tag, &[NAME]);
    let serial = leaf_serial(&std::fs::read_to_string(&crt).unwrap());
    (crt, key, serial)
}

fn leaf_serial(chain_pem: &str) -> String {
    let chain = cert_core::certificate::parse_chain(chain_pem).unwrap();
    cert_core::certificate::leaf_info(&chain[0]).unwrap().serial
}

fn import(store: &Path, cert: &Path, key: &Path, delay_ms: u64) -> Child {
    command(&[])
        .env("CERTSTORE_DRILL_WRITE_DELAY_MS", delay_ms.to_string())
        .args([
            "import",
            "--force",
            "--issuer",
            "local",
            "--name",
            NAME,
            "--storage",
        ])
        .arg(store)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills `child` after `after` (SIGKILL); true when it was still running at that moment.
fn kill_after(mut child: Child, after: Duration) -> bool {
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5).min(deadline - Instant::now()));
    }
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    running
}

/// The record as the library reads it: never broken, always one of `serials`.
fn assert_record(store: &Path, serials: &[&str]) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let storage = FileStorage::new(store);
    let id = CertificateId::new("local", NAME);
    let state = runtime
        .block_on(record::load_certificate(&storage, &id))
        .unwrap();
    let serial = match state {
        Some(RecordState::Valid(loaded)) => loaded.stored.meta.serial.clone(),
        other => panic!("the record must be whole after a kill: {other:?}"),
    };
    if !serials.is_empty() {
        assert!(
            serials.contains(&serial.as_str()),
            "serial {serial} is neither the old nor the new one"
        );
    }
    serial
}

/// Whether the copies beside the bundle lag behind it: the kill landed between the commit
/// point and the last copy.
fn copies_stale(store: &Path) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let storage = FileStorage::new(store);
    let id = CertificateId::new("local", NAME);
    runtime.block_on(async {
        match record::load_certificate(&storage, &id).await.unwrap() {
            Some(RecordState::Valid(loaded)) => {
                !record::copies_current(&storage, &id, &loaded.stored)
                    .await
                    .unwrap()
            }
            _ => false,
        }
    })
}

/// `certstore export` writes a chain and key that belong together; returns the serial.
fn export_matches(store: &Path) -> String {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("export");
    let status = command(&[])
        .args(["export", NAME, "--issuer", "local", "--storage"])
        .arg(store)
        .arg("--out")
        .arg(&target)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "export failed");
    let chain = std::fs::read_to_string(target.join(format!("{NAME}.crt"))).unwrap();
    let key = std::fs::read_to_string(target.join(format!("{NAME}.key"))).unwrap();
    cert_core::certificate::certified_key_from_pem(&chain, &key)
        .expect("the exported key and chain belong together");
    leaf_serial(&chain)
}

#[test]
fn import_killed_at_random_moments_leaves_the_old_or_the_new_certificate() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let (a_crt, a_key, a_serial) = self_signed(work.path(), "a");
    let (b_crt, b_key, b_serial) = self_signed(work.path(), "b");
    let status = import(&store, &a_crt, &a_key, 0).wait().unwrap();
    assert!(status.success());
    let mut rng = Rng::new();
    let delay = 60;
    // How long one slowed import takes on this machine, start-up included: the kills are
    // spread from the start to a little past the end.
    let started = Instant::now();
    assert!(
        import(&store, &a_crt, &a_key, delay)
            .wait()
            .unwrap()
            .success()
    );
    let window = started.elapsed().as_millis() as u64 * 13 / 10;
    let kills = 30;
    let mut inside = 0;
    let mut between = 0;
    for round in 0..kills {
        let (crt, key) = if round % 2 == 0 {
            (&b_crt, &b_key)
        } else {
            (&a_crt, &a_key)
        };
        // A save is four slowed writes; aim anywhere from start-up to just past the end.
        let child = import(&store, crt, key, delay);
        if kill_after(child, Duration::from_millis(rng.below(window))) {
            inside += 1;
        }
        if copies_stale(&store) {
            between += 1;
        }
        let serial = assert_record(&store, &[&a_serial, &b_serial]);
        assert_eq!(export_matches(&store), serial, "export reads the record");
    }
    eprintln!(
        "{inside} of {kills} kills landed while import was running, {between} left the copies behind the \
         bundle"
    );
    assert!(
        inside >= kills / 3,
        "too few kills landed inside the import ({inside} of {kills}): the drill proves nothing"
    );
}

/// Reads `serve`'s standard output until it says where it listens.
fn listening_on(child: &mut Child) -> SocketAddr {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(addr) = line.strip_prefix("listening on ") {
            let addr = addr.trim().trim_start_matches("https://");
            // Keep reading (and discarding) the rest so the child never blocks on a pipe.
            std::thread::spawn(move || for _ in lines {});
            return addr.parse().unwrap();
        }
    }
    panic!("serve did not say where it listens");
}

fn serve(store: &Path, delay_ms: u64) -> Child {
    let mut cmd = command(&[]);
    cmd.env("CERTSTORE_DRILL_WRITE_DELAY_MS", delay_ms.to_string())
        .args([
            "serve",
            "--domain",
            NAME,
            "--listen",
            "127.0.0.1:0",
            "--storage",
        ])
        .arg(store)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // A lock left by a killed process is taken over after 2 s instead of 30.
    cmd.args(["--lock-ttl", "2s"]);
    // Leaves live 6 s and renew at half-life: a renewal every few seconds.
    cmd.args(["--leaf-lifetime", "6s", "--check-interval", "1s"]);
    cmd.spawn().unwrap()
}

/// Accepts whatever certificate the server shows: the drill checks that the server can
/// complete a handshake with the key of the certificate it presents (which only a matching
/// pair can), and compares that certificate with storage itself.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS handshake (and one request) for `NAME` against `addr`; the served leaf's serial.
fn handshake(addr: SocketAddr) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(NAME).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first().cloned())
        .ok_or("no certificate was served")?;
    Ok(cert_core::certificate::leaf_info(&leaf)
        .map_err(|e| e.to_string())?
        .serial)
}

/// A fresh `serve` on the store serves the name, with the stored certificate or a newer one.
fn fresh_serve_serves(store: &Path) -> String {
    let mut child = serve(store, 0);
    let addr = listening_on(&mut child);
    let deadline = Instant::now() + Duration::from_secs(90);
    let result = loop {
        match handshake(addr) {
            Ok(serial) => break Ok(serial),
            Err(err) if Instant::now() >= deadline => break Err(err),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result.unwrap_or_else(|err| panic!("a fresh serve did not serve {NAME}: {err}"))
}

#[test]
fn serve_killed_during_renewals_never_leaves_the_name_unservable() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let mut rng = Rng::new();
    let kills = 20;
    let mut renewed_between = 0;
    let mut between = 0;
    let mut last = None;
    for _ in 0..kills {
        // Writes slowed so a save takes about a second of each few-second renewal cycle.
        let mut child = serve(&store, 150);
        let _ = listening_on(&mut child);
        kill_after(child, Duration::from_millis(1_000 + rng.below(5_000)));
        let stored = assert_record(&store, &[]);
        if copies_stale(&store) {
            between += 1;
        }
        if last.as_ref().is_some_and(|l| *l != stored) {
            renewed_between += 1;
        }
        let served = fresh_serve_serves(&store);
        let exported = export_matches(&store);
        let now_stored = assert_record(&store, &[]);
        assert!(
            served == stored || served == now_stored,
            "served {served}, stored {stored} then {now_stored}"
        );
        assert_eq!(exported, now_stored);
        last = Some(now_stored);
    }
    eprintln!(
        "the certificate changed between {renewed_between} of {kills} kills; {between} kills \
         landed between a bundle and its copies"
    );
    assert!(
        renewed_between >= kills / 4,
        "renewals did not run between the kills ({renewed_between} of {kills})"
    );
}
