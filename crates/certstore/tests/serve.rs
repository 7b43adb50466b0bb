//! `certstore serve` end to end: the binary runs, a TLS client that trusts the printed root
//! gets the page, and a second process on the same storage serves the same certificate.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{command, fetch, http_get, path, series, serve, serve_with};

#[tokio::test]
async fn two_servers_share_one_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("store");
    let first = serve(&path(&storage), &[]);
    let root_pem = std::fs::read_to_string(&first.root).unwrap();
    let (page, leaf_one) = fetch(first.port, "localhost", &root_pem).await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("Hello from certstore"));
    assert!(page.contains("Server name: localhost"));

    let second = serve(&path(&storage), &[]);
    assert_eq!(second.root, first.root);
    let (page, leaf_two) = fetch(second.port, "localhost", &root_pem).await;
    assert!(page.contains("Hello from certstore"));
    assert_eq!(
        leaf_one, leaf_two,
        "the second process reuses the certificate"
    );

    let issued = std::fs::read_dir(storage.join("certificates/local"))
        .unwrap()
        .count();
    assert_eq!(issued, 1, "one certificate directory: localhost");
}

#[tokio::test]
async fn metrics_and_health_are_served_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("store");
    let server = serve_with(&path(&storage), &[], &["--metrics", "127.0.0.1:0"]);
    let metrics = server
        .metrics
        .expect("the server printed its metrics address");
    let root_pem = std::fs::read_to_string(&server.root).unwrap();
    let (page, _) = fetch(server.port, "localhost", &root_pem).await;
    assert!(page.contains("Hello from certstore"), "{page}");

    assert_eq!(
        http_get(metrics, "/healthz").await,
        (200, "ok\n".to_owned())
    );
    let (status, text) = http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    let issued = series(
        &text,
        "certstore_certificates_obtained_total",
        &[("issuer", "local")],
    );
    assert_eq!(issued, Some(1.0), "{text}");
    assert_eq!(series(&text, "certstore_managed_names", &[]), Some(1.0));
    assert_eq!(series(&text, "certstore_cache_hits_total", &[]), Some(1.0));
    let stores = [("backend", "file"), ("operation", "store_fenced")];
    let timed = "certstore_storage_operation_duration_seconds_count";
    assert!(series(&text, timed, &stores).unwrap() >= 1.0, "{text}");
    assert!(
        text.contains("# HELP certstore_lock_wait_seconds"),
        "{text}"
    );
}

#[test]
fn a_bad_listen_address_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(&[])
        .args(["serve", "--listen", "not-an-address", "--storage"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen"), "{err}");
}

#[test]
fn a_port_in_use_is_the_first_line_on_stderr_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let storage = dir.path().join("store");
    let out = command(&[])
        .args(["serve", "--listen", &addr, "--storage"])
        .arg(&storage)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("error: cannot listen on {addr}")),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    assert!(!storage.exists(), "no storage and no CA were created");
}

#[test]
fn the_root_copy_is_private_and_removed_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // An SQLite storage holds no root file to point at: the server writes a copy.
    let storage = format!("sqlite://{}", dir.path().join("s.db").display());
    let mut child = command(&[("TMPDIR", &path(&tmp))])
        .args(["serve", "--listen", "127.0.0.1:0", "--storage", &storage])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut root = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(path) = line.strip_prefix("root CA certificate: ") {
            root = Some(std::path::PathBuf::from(path));
        }
        if line.starts_with("try: ") {
            break;
        }
    }
    let root = root.expect("the server printed the root path");
    let private = root.parent().unwrap();
    assert_eq!(private.parent(), Some(tmp.as_path()), "{}", root.display());
    let name = private.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("certstore-") && name.len() > 30,
        "an unguessable name: {name}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(private), 0o700);
    assert_eq!(mode(&root), 0o600);
    assert!(
        std::fs::read_to_string(&root)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    assert!(!private.exists(), "the copy and its directory are removed");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    // Logs written to a pipe carry no colour codes.
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(logs.contains("INFO"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "{logs:?}");
}
