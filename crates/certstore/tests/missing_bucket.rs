//! A missing S3 bucket or Azure container is named as such, with the way to create it,
//! instead of showing up as missing keys; so is the missing directory of a SQLite database.
#![allow(clippy::unwrap_used, missing_docs)]

use std::process::{Command, Stdio};

use integration_tests::{service_url, unique_name};

fn certstore(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_certstore"))
        .args(args)
        .env_remove("CERTSTORE_STORAGE")
        .env_remove("RUST_LOG")
        .env("AWS_ACCESS_KEY_ID", "certstore")
        .env("AWS_SECRET_ACCESS_KEY", "certstore-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(url: &str, what: &str) {
    let (code, stderr) = certstore(&["ls", "--storage", url]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("the {what}")) && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("--create"), "{stderr}");
    assert!(!stderr.contains("not found: "), "{stderr}");
    let (code, stderr) = certstore(&["ls", "--create", "--storage", url]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = certstore(&["ls", "--storage", url]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_missing_s3_bucket_is_named() {
    let Some(endpoint) = service_url("CERTSTORE_TEST_S3_URL") else {
        return;
    };
    let bucket = unique_name("missing").replace('_', "-");
    check(
        &format!("s3://{bucket}/p?endpoint={endpoint}&region=us-east-1&path_style=true"),
        "bucket",
    );
}

#[test]
fn a_missing_azure_container_is_named() {
    let Some(endpoint) = service_url("CERTSTORE_TEST_AZURE_URL") else {
        return;
    };
    let container = unique_name("missing").replace('_', "-");
    check(
        &format!("azblob://devstoreaccount1/{container}/p?endpoint={endpoint}"),
        "container",
    );
}

#[test]
fn a_missing_sqlite_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("absent").join("certs.db");
    let (code, stderr) = certstore(&["ls", "--storage", &format!("sqlite://{}", db.display())]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("the directory") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(!stderr.contains("server is running"), "{stderr}");
}
