//! `certstore ca-root`: the internal CA's root from any storage, printed or written to a
//! file, and a clear error when there is no CA.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use cert_core::{InternalIssuer, InternalIssuerConfig};
use common::{path, run};

/// Creates the internal CA `name` in the storage at `url`, as a server would: its root.
async fn create_ca(url: &str, name: &str) -> String {
    let opened = certstore::open(url, &certstore::OpenOptions::default())
        .await
        .unwrap();
    InternalIssuer::new(
        Arc::clone(&opened.store),
        InternalIssuerConfig::default().with_name(name),
    )
    .root_pem()
    .await
    .unwrap()
}

#[tokio::test]
async fn prints_the_root_from_sqlite_storage() {
    let dir = tempfile::tempdir().unwrap();
    // No root file to point at on SQLite: the command is the way to the root.
    let url = format!("sqlite://{}", dir.path().join("certs.db").display());
    let root = create_ca(&url, "local").await;
    let out = run(&["ca-root", "--storage", &url]).ok();
    assert_eq!(out.stdout, root);
    assert!(out.stdout.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(out.stderr.is_empty(), "{}", out.stderr);

    let other = create_ca(&url, "staging").await;
    assert_ne!(other, root);
    let out = run(&["ca-root", "--storage", &url, "--ca", "staging"]).ok();
    assert_eq!(out.stdout, other, "--ca picks the CA by name");
}

#[tokio::test]
async fn writes_the_root_to_a_file_and_keeps_an_existing_one_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let storage = path(&dir.path().join("store"));
    let root = create_ca(&storage, "local").await;
    let file = dir.path().join("root.pem");

    let out = run(&["ca-root", "--storage", &storage, "--out", &path(&file)]).ok();
    assert_eq!(out.stdout.trim_end(), path(&file));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), root);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o600, 0o600, "{mode:o}");
    assert_eq!(mode & 0o022, 0, "{mode:o}");

    std::fs::write(&file, "something else").unwrap();
    run(&["ca-root", "--storage", &storage, "--out", &path(&file)]).fails_with(2, "--force");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "something else");
    run(&[
        "ca-root",
        "--storage",
        &storage,
        "--out",
        &path(&file),
        "--force",
    ])
    .ok();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), root);

    // Never through a symbolic link, even with --force.
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, "keep").unwrap();
    let link = dir.path().join("link.pem");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    run(&[
        "ca-root",
        "--storage",
        &storage,
        "--out",
        &path(&link),
        "--force",
    ])
    .fails_with(2, "symbolic link");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
}

#[test]
fn a_storage_without_a_ca_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let storage = path(&dir.path().join("empty"));
    let out = run(&["ca-root", "--storage", &storage]).fails_with(2, "no internal CA \"local\"");
    assert!(out.stderr.contains("ca/local/"), "{}", out.stderr);
    assert!(out.stderr.contains("certstore serve"), "{}", out.stderr);
    assert!(out.stdout.is_empty());

    let file = dir.path().join("root.pem");
    run(&["ca-root", "--storage", &storage, "--out", &path(&file)]).fails(2);
    assert!(!file.exists(), "nothing is written");
}

#[tokio::test]
async fn a_broken_ca_is_reported_with_what_to_remove() {
    let dir = tempfile::tempdir().unwrap();
    let storage = path(&dir.path().join("store"));
    create_ca(&storage, "local").await;
    std::fs::write(dir.path().join("store/ca/local/ca.bundle"), "not a bundle").unwrap();
    let out = run(&["ca-root", "--storage", &storage]).fails(1);
    assert!(out.stderr.contains("unusable"), "{}", out.stderr);
    assert!(out.stderr.contains("remove ca/local"), "{}", out.stderr);
    assert!(out.stdout.is_empty());
}
