//! Certificate records through the `certstore` command: broken records are reported and
//! removable without stopping a server, records of older releases (three values, no
//! bundle) still work, and what the command writes is a bundle first.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::Path;

use cert_core::record::{self, CertificateId, Layout, RecordState};
use cert_core::{Storage, StoredCertificate};
use cert_file::FileStorage;
use common::{fetch, run, self_signed, serve};

/// Writes a record the way releases before bundles did: key, chain, then metadata.
async fn write_old_layout(
    files: &FileStorage,
    id: &CertificateId,
    chain: &str,
    key: &str,
    meta: &[u8],
) {
    files.store(&id.key_key(), key.as_bytes()).await.unwrap();
    files
        .store(&id.chain_key(), chain.as_bytes())
        .await
        .unwrap();
    files.store(&id.meta_key(), meta).await.unwrap();
}

fn meta_of(chain: &str, key: &str, issuer: &str) -> Vec<u8> {
    let stored = StoredCertificate::from_pem(chain, key, issuer, None).unwrap();
    serde_json::to_vec(&stored.meta).unwrap()
}

fn certificates_check(doctor: &serde_json::Value) -> Vec<serde_json::Value> {
    doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == "certificates")
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_broken_record_is_reported_removable_and_reissued_by_serve() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = root.display().to_string();
    let files = FileStorage::new(&root);
    // broken.example: the three values of an older release that do not belong together
    // (the key is another certificate's).
    let (chain, key) = self_signed(&["broken.example"]);
    let (_, other_key) = self_signed(&["other.example"]);
    let broken = CertificateId::new("local", "broken.example");
    write_old_layout(
        &files,
        &broken,
        &chain,
        &other_key,
        &meta_of(&chain, &key, "local"),
    )
    .await;
    // gone.example: copies without a bundle and without metadata.
    let gone = CertificateId::new("local", "gone.example");
    let (gone_chain, gone_key) = self_signed(&["gone.example"]);
    files
        .store(&gone.key_key(), gone_key.as_bytes())
        .await
        .unwrap();
    files
        .store(&gone.chain_key(), gone_chain.as_bytes())
        .await
        .unwrap();

    let ls = run(&["ls", "--storage", &store]).ok();
    let line = ls
        .stdout
        .lines()
        .find(|l| l.starts_with("broken.example"))
        .unwrap();
    assert!(
        line.contains("BROKEN: certificate, key and metadata do not belong together"),
        "{line}"
    );
    let listed = run(&["ls", "--json", "--storage", &store]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed[0]["name"], "broken.example");
    assert_eq!(listed[0]["broken"], true);
    assert!(
        listed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("do not belong together")
    );
    assert_eq!(listed[1]["broken"], true);
    assert!(
        listed[1]["reason"].as_str().unwrap().contains("incomplete"),
        "{listed}"
    );

    let shown = run(&["show", "--storage", &store, "broken.example"]).fails(1);
    assert!(
        shown.stderr.contains("do not belong together"),
        "{}",
        shown.stderr
    );
    assert!(shown.stdout.is_empty());
    let out = dir.path().join("exported");
    let refused = run(&[
        "export",
        "--storage",
        &store,
        "broken.example",
        "--out",
        &out.display().to_string(),
    ])
    .fails(1);
    assert!(
        refused.stderr.contains("cannot be read"),
        "{}",
        refused.stderr
    );
    assert!(!out.exists(), "a refused export writes nothing");

    let doctor = run(&["doctor", "--json", "--storage", &store]);
    assert_eq!(doctor.code, 1, "{}", doctor.stderr);
    let doctor = doctor.json();
    assert_eq!(doctor["ok"], false);
    let problems = certificates_check(&doctor);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems.iter().all(|c| c["status"] == "fail"),
        "{problems:?}"
    );
    assert!(
        problems[0]["detail"]
            .as_str()
            .unwrap()
            .contains("broken.example"),
        "{problems:?}"
    );

    // rm: refused without a terminal or --yes, an error for an unknown name, then clean.
    let refused = run(&["rm", "--storage", &store, "gone.example"]).fails(2);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert!(files.exists(&gone.chain_key()).await.unwrap());
    run(&["rm", "--yes", "--storage", &store, "nothing.example"]).fails(2);
    let removed = run(&["rm", "--yes", "--storage", &store, "gone.example"]).ok();
    assert!(
        removed
            .stdout
            .contains("removed certificates/local/gone.example"),
        "{}",
        removed.stdout
    );
    let listed = run(&["ls", "--json", "--storage", &store]).ok().json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["broken.example"]);
    assert!(
        files
            .list("certificates/local/gone.example", true)
            .await
            .unwrap()
            .is_empty()
    );

    // A server for the broken name and another starts, serves both, and re-issues the
    // broken one: its new certificate is signed by the internal CA (the client trusts
    // only that root).
    let server = serve(&store, &["localhost", "broken.example"]);
    let root_pem = std::fs::read_to_string(&server.root).unwrap();
    let (page, _) = fetch(server.port, "localhost", &root_pem).await;
    assert!(page.contains("Server name: localhost"), "{page}");
    let (page, leaf) = fetch(server.port, "broken.example", &root_pem).await;
    assert!(page.contains("Server name: broken.example"), "{page}");
    let hand_written = cert_core::certificate::parse_chain(&chain)
        .unwrap()
        .remove(0);
    assert_ne!(leaf, hand_written.as_ref());
    drop(server);
    let Some(RecordState::Valid(loaded)) = record::load_certificate(&files, &broken).await.unwrap()
    else {
        panic!("the re-issued record loads");
    };
    assert_eq!(loaded.layout, Layout::Bundle);
    run(&["show", "--storage", &store, "broken.example"]).ok();
    let removed = run(&["rm", "--yes", "--storage", &store, "broken.example"]).ok();
    assert!(
        removed
            .stdout
            .contains("removed certificates/local/broken.example"),
        "{}",
        removed.stdout
    );
    let listed = run(&["ls", "--json", "--storage", &store]).ok().json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["name"] != "broken.example"),
        "{listed}"
    );
}

#[tokio::test]
async fn older_layout_records_still_work_and_import_writes_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = root.display().to_string();
    let files = FileStorage::new(&root);
    let (chain, key) = self_signed(&["old.example"]);
    let old = CertificateId::new("imported", "old.example");
    write_old_layout(
        &files,
        &old,
        &chain,
        &key,
        &meta_of(&chain, &key, "imported"),
    )
    .await;

    let ls = run(&["ls", "--storage", &store]).ok();
    assert!(
        ls.stdout
            .contains("old.example  imported  2099-01-01T00:00:00Z"),
        "{}",
        ls.stdout
    );
    let listed = run(&["ls", "--json", "--storage", &store]).ok().json();
    assert_eq!(listed[0]["broken"], false);
    assert_eq!(listed[0]["layout"], "parts");
    let shown = run(&["show", "--json", "--storage", &store, "old.example"])
        .ok()
        .json();
    assert_eq!(shown[0]["names"], serde_json::json!(["old.example"]));
    assert!(shown[0]["keys"]["bundle"].is_null());
    let out = dir.path().join("out");
    run(&[
        "export",
        "--storage",
        &store,
        "old.example",
        "--out",
        &out.display().to_string(),
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(out.join("old.example.crt")).unwrap(),
        chain
    );
    assert_eq!(
        std::fs::read_to_string(out.join("old.example.key")).unwrap(),
        key
    );
    let doctor = run(&["doctor", "--json", "--storage", &store]).ok().json();
    let summary = certificates_check(&doctor);
    assert_eq!(summary[0]["status"], "pass", "{summary:?}");
    assert!(
        summary[0]["detail"]
            .as_str()
            .unwrap()
            .contains("older releases"),
        "{summary:?}"
    );

    // Import writes a bundle (the record) beside the copies.
    let (new_chain, new_key) = self_signed(&["new.example"]);
    std::fs::write(dir.path().join("new.crt"), &new_chain).unwrap();
    std::fs::write(dir.path().join("new.key"), &new_key).unwrap();
    run(&[
        "import",
        "--storage",
        &store,
        "--cert",
        &dir.path().join("new.crt").display().to_string(),
        "--key",
        &dir.path().join("new.key").display().to_string(),
    ])
    .ok();
    let new = CertificateId::new("imported", "new.example");
    let Some(RecordState::Valid(loaded)) = record::load_certificate(&files, &new).await.unwrap()
    else {
        panic!("the imported record loads");
    };
    assert_eq!(loaded.layout, Layout::Bundle);
    assert!(
        record::copies_current(&files, &new, &loaded.stored)
            .await
            .unwrap()
    );

    // A stale copy is a warning, and export still writes the record's own chain and key.
    files
        .store(&new.chain_key(), chain.as_bytes())
        .await
        .unwrap();
    let doctor = run(&["doctor", "--json", "--storage", &store]).ok().json();
    let warnings = certificates_check(&doctor);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["status"], "warn");
    assert!(
        warnings[0]["detail"].as_str().unwrap().contains("stale"),
        "{warnings:?}"
    );
    run(&[
        "export",
        "--storage",
        &store,
        "new.example",
        "--out",
        &out.display().to_string(),
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(out.join("new.example.crt")).unwrap(),
        new_chain
    );
    assert_eq!(
        std::fs::read_to_string(out.join("new.example.key")).unwrap(),
        new_key
    );
}

#[test]
fn rm_needs_a_name_and_is_listed_in_help() {
    let help = run(&["--help"]).ok();
    assert!(help.stdout.contains("rm"), "{}", help.stdout);
    assert_eq!(
        run(&[
            "rm",
            "--storage",
            Path::new("/nonexistent").to_str().unwrap()
        ])
        .code,
        2
    );
}
