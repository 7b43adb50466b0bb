//! A missing S3 bucket or Azure container is named as such, with the way to create it,
//! instead of showing up as missing keys; so is the missing directory of a SQLite database.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::run;
use integration_tests::{service_url, unique_name};

fn check(url: &str, what: &str) {
    let out = run(&["ls", "--storage", url]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let stderr = out.stderr;
    assert!(
        stderr.contains(&format!("the {what}")) && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("--create"), "{stderr}");
    assert!(!stderr.contains("not found: "), "{stderr}");
    run(&["ls", "--create", "--storage", url]).ok();
    run(&["ls", "--storage", url]).ok();
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
    let out = run(&["ls", "--storage", &format!("sqlite://{}", db.display())]);
    assert_ne!(out.code, 0);
    let stderr = out.stderr;
    assert!(
        stderr.contains("the directory") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(!stderr.contains("server is running"), "{stderr}");
}
