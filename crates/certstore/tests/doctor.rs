//! `certstore doctor` end to end: it passes on every reachable backend
//! (`CERTSTORE_TEST_*_URL`, see `cli.rs`); its lock check takes one fixed lock name, so
//! repeated runs leave no lock entries behind (a lock blob on Azure); and a lock held by
//! another run is reported as a warning instead of being waited for.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use cert_core::Locker;
use cert_file::FileStorage;
use common::{Run, command, import, make_dated_cert, path, run};
use integration_tests::{service_url, unique_name};

/// The lock the doctor's lock check takes.
const DOCTOR_LOCK: &str = "certstore-doctor";

#[tokio::test]
async fn doctor_passes_on_every_reachable_backend() {
    let dir = tempfile::tempdir().unwrap();
    let ns = unique_name("cli_doctor");
    let mut urls = vec![
        path(&dir.path().join("files")),
        format!("sqlite://{}?namespace={ns}", path(&dir.path().join("d.db"))),
    ];
    if let Some(url) = service_url("CERTSTORE_TEST_REDIS_URL") {
        urls.push(format!("{}?namespace={ns}", url.trim_end_matches('/')));
    }
    for var in ["CERTSTORE_TEST_POSTGRES_URL", "CERTSTORE_TEST_MYSQL_URL"] {
        if let Some(url) = service_url(var) {
            let sep = if url.contains('?') { '&' } else { '?' };
            urls.push(format!("{url}{sep}namespace={ns}"));
        }
    }
    if let Some(url) = service_url("CERTSTORE_TEST_S3_URL") {
        urls.push(format!(
            "s3://certstore-cli/{ns}?endpoint={url}&region=us-east-1&path_style=true"
        ));
    }
    if let Some(url) = service_url("CERTSTORE_TEST_AZURE_URL") {
        urls.push(format!(
            "azblob://devstoreaccount1/certstore-cli/{ns}?endpoint={url}"
        ));
    }
    for url in &urls {
        let doctor = run(&["doctor", "--create", "--json", "--storage", url])
            .ok()
            .json();
        assert_eq!(doctor["ok"], true, "{url}: {doctor}");
        let names: Vec<&str> = doctor["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["check"].as_str().unwrap())
            .collect();
        for want in [
            "connect",
            "list",
            "round trip",
            "clock skew",
            "lock",
            "encryption",
        ] {
            assert!(names.contains(&want), "{url}: {names:?}");
        }
    }
    let (crt, key) = make_dated_cert(dir.path(), &["cloud.example"], (2024, 2099));
    for url in urls.iter().skip(2) {
        import(url, &[], &crt, &key);
        let shown = run(&["show", "--json", "--storage", url, "cloud.example"])
            .ok()
            .json();
        assert_eq!(
            shown[0]["names"],
            serde_json::json!(["cloud.example"]),
            "{url}"
        );
    }
}

/// The check named `name` of a `doctor --json` report.
fn check<'a>(doctor: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check: {doctor}"))
}

/// `certstore` with `args`, killed (and the test failed) if it has not finished within
/// `limit`.
fn run_within(limit: Duration, args: &[&str]) -> Run {
    let child = command(&[])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(limit) {
        Ok(out) => out.unwrap().into(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
            panic!("certstore {args:?} did not finish within {limit:?}");
        }
    }
}

#[tokio::test]
async fn a_doctor_lock_held_by_another_run_is_a_warning_not_a_wait() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let files = FileStorage::new(&root);
    // Another doctor run, as far as this one can tell, holding the lock for ten minutes.
    let held = files
        .try_acquire(DOCTOR_LOCK, Duration::from_secs(600))
        .await
        .unwrap()
        .unwrap();
    let doctor = run_within(
        Duration::from_secs(30),
        &["doctor", "--json", "--storage", &path(&root)],
    )
    .ok()
    .json();
    assert_eq!(doctor["ok"], true, "{doctor}");
    let lock = check(&doctor, "lock");
    assert_eq!(lock["status"], "warn", "{lock}");
    assert!(
        lock["detail"]
            .as_str()
            .unwrap()
            .contains("held by another doctor run"),
        "{lock}"
    );
    // The checks after it still ran.
    for name in ["encryption", "certificates"] {
        check(&doctor, name);
    }
    // The other run keeps its lock.
    files
        .refresh(&held, Duration::from_secs(600))
        .await
        .unwrap();
    files.release(&held).await.unwrap();
    let doctor = run(&["doctor", "--json", "--storage", &path(&root)])
        .ok()
        .json();
    assert_eq!(check(&doctor, "lock")["status"], "pass", "{doctor}");
}

/// How many blobs of the container lie below `prefix`, by the blob service's List Blobs
/// operation: lock blobs are not keys, so the storage's own listing leaves them out.
fn blobs_below(storage: &cert_azure::AzureStorage, prefix: &str) -> usize {
    let signed = url::Url::parse(&storage.signed_container_url().unwrap()).unwrap();
    assert_eq!(signed.scheme(), "http", "Azurite answers plain HTTP");
    let host = signed.host_str().unwrap();
    let port = signed.port_or_known_default().unwrap();
    // HTTP/1.0: the answer comes whole, without chunks, and the connection closes after it.
    let request = format!(
        "GET {}?restype=container&comp=list&prefix={prefix}&{} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n",
        signed.path(),
        signed.query().unwrap()
    );
    let mut stream = TcpStream::connect((host, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.lines().next().unwrap_or_default();
    assert_eq!(status.split_whitespace().nth(1), Some("200"), "{answer}");
    answer.matches("<Name>").count()
}

#[tokio::test]
async fn repeated_runs_leave_at_most_one_lock_blob_on_azure() {
    let Some(endpoint) = service_url("CERTSTORE_TEST_AZURE_URL") else {
        return;
    };
    let ns = unique_name("doctor_lock");
    let storage = cert_azure::AzureStorage::azurite(&endpoint, "certstore-cli").unwrap();
    storage.create_container_if_missing().await.unwrap();
    let url = format!("azblob://devstoreaccount1/certstore-cli/{ns}?endpoint={endpoint}");
    let locks = format!("{ns}/.certstore-locks/");
    let mut counts = vec![blobs_below(&storage, &locks)];
    for _ in 0..2 {
        let doctor = run(&["doctor", "--json", "--storage", &url]).ok().json();
        assert_eq!(check(&doctor, "lock")["status"], "pass", "{doctor}");
        counts.push(blobs_below(&storage, &locks));
    }
    assert_eq!(counts[0], 0, "{counts:?}");
    assert!(
        counts[1] <= 1,
        "one run leaves at most one lock blob: {counts:?}"
    );
    assert_eq!(
        counts[2], counts[1],
        "a second run adds no lock blob: {counts:?}"
    );
}
